// The JSON header of a safetensors file (private to models/weights), read and written with
// nlohmann-json:
//   {"__metadata__": {"k": "v", ...}, "<tensor>": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// ParseSafetensorsHeader checks the structure: a JSON object (RFC 8259, strict; UTF-8), no key
// twice in one object, at most kMaxDepth levels of nesting, __metadata__ an object of strings,
// every tensor an object with a string dtype, a shape of non-negative integers and two
// non-negative, non-decreasing data_offsets (exact 64-bit integers). What needs the dtype table
// or the file's size (byte counts, bounds) is checked by SafetensorsFile::Open.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT saying what is wrong ("tensor 'w':
// ..."; "bad header: ..." for JSON syntax, duplicate keys and nesting, with the position).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve::weights_internal {

struct SafetensorsHeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  int64_t begin = 0;
  int64_t end = 0;

  bool operator==(const SafetensorsHeaderEntry& other) const {
    return name == other.name && dtype == other.dtype && shape == other.shape &&
           begin == other.begin && end == other.end;
  }
};

struct SafetensorsHeader {
  std::map<std::string, std::string> metadata;
  std::vector<SafetensorsHeaderEntry> tensors;  // In file order.
};

// Deeper nesting than this is refused (a real header nests 3 levels).
inline constexpr int kMaxDepth = 64;

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view text);

// The header as compact JSON: __metadata__ first (when not empty), then the tensors in order.
// INVALID_ARGUMENT when a name or metadata string is not valid UTF-8.
absl::StatusOr<std::string> SafetensorsHeaderJson(const SafetensorsHeader& header);

}  // namespace vitserve::weights_internal
