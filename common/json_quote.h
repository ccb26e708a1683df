// JSON string quoting (RFC 8259, Sec. 7) shared by the safetensors header writer and the
// client's --json output: quotes, backslashes and control characters are escaped; every other
// byte, UTF-8 included, is copied as is.
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace vitserve {

// Appends the JSON string literal of the `size` bytes at `data` (with its quotes) to `*out`.
inline void AppendJsonQuoted(const char* data, size_t size, std::string* out) {
  out->reserve(out->size() + size + 2);
  out->push_back('"');
  for (size_t i = 0; i < size; ++i) {
    const char c = data[i];
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
          *out += escaped;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

}  // namespace vitserve
