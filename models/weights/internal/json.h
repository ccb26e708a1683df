// A minimal JSON reader for safetensors headers (private to models/weights).
//
// Debian 12's build image has no JSON library in the dependency set, and a safetensors header
// is small, machine-written JSON, so a strict recursive-descent parser of RFC 8259 is enough:
// objects, arrays, strings (with escapes, \u including surrogate pairs, emitted as UTF-8),
// numbers, true/false/null. Nesting depth is bounded so hostile files cannot overflow the stack.
// Ownership: JsonValue owns its children. Thread-safety: value type, no shared state.
// Errors: ParseJson returns INVALID_ARGUMENT with the byte offset of the first problem.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve::weights_internal {

struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type = Type::kNull;
  bool boolean = false;
  // Numbers keep their text so integers beyond 2^53 (byte offsets) are read exactly.
  std::string number_text;
  std::string string;
  std::vector<JsonValue> array;
  // Object members in file order; duplicate keys are rejected by the parser.
  std::vector<std::pair<std::string, JsonValue>> object;

  bool is_object() const { return type == Type::kObject; }
  bool is_array() const { return type == Type::kArray; }
  bool is_string() const { return type == Type::kString; }
  bool is_number() const { return type == Type::kNumber; }
  // The member `key` of an object, or nullptr.
  const JsonValue* Find(std::string_view key) const;
  // The number as a non-negative integer that fits in int64, or an error.
  absl::StatusOr<int64_t> AsNonNegativeInt() const;
};

absl::StatusOr<JsonValue> ParseJson(std::string_view text);

// `text` as a JSON string literal (with quotes), escaping what JSON requires.
std::string JsonQuote(std::string_view text);

}  // namespace vitserve::weights_internal
