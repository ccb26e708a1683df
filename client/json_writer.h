// A tiny streaming JSON writer for the CLI's one-object-per-line output. It escapes strings
// (quotes, backslashes, control characters as \uXXXX; other bytes pass through, so UTF-8 stays
// UTF-8) and writes non-finite numbers as null. Not thread-safe; one writer per document.
//
//   JsonWriter w;
//   w.BeginObject().Key("image").String("cat.jpg").Key("score").Number(0.91).EndObject();
//   w.str() == R"({"image":"cat.jpg","score":0.91})"
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace vitserve::client {

// `s` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view s);

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // Inside an object: the next value's name.
  JsonWriter& Key(absl::string_view key);
  JsonWriter& String(absl::string_view value);
  JsonWriter& Int(int64_t value);
  // `significant_digits` as in printf's %g; NaN and infinities become null.
  JsonWriter& Number(double value, int significant_digits = 6);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();

  const std::string& str() const { return out_; }

 private:
  // Writes the comma that separates this value from the previous one in its container.
  void BeforeValue();

  std::string out_;
  // One entry per open container: whether it already holds a value.
  std::vector<bool> has_value_;
  bool after_key_ = false;
};

}  // namespace vitserve::client
