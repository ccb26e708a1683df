#include "models/weights/internal/safetensors_header.h"

#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace vitserve::weights_internal {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// A JSON number as a non-negative integer that fits in int64 (byte offsets can exceed 2^53, so
// only exact integers count: 4.0 and 1e3 do not).
absl::StatusOr<int64_t> NonNegativeInt(const ordered_json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t n = value.get<uint64_t>();
    if (n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return static_cast<int64_t>(n);
    }
    return absl::InvalidArgumentError(absl::StrCat(n, " is too large"));
  }
  if (value.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(value.dump(), " is negative"));
  }
  return absl::InvalidArgumentError(absl::StrCat(value.dump(), " is not an integer"));
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view text) {
  // nlohmann-json keeps the last of duplicate keys and nests without limit; both are refused
  // here through its parser callback (a set of keys per open object).
  std::vector<absl::flat_hash_set<std::string>> keys;
  std::string problem;
  auto check = [&](int depth, json::parse_event_t event, ordered_json& parsed) {
    if (!problem.empty()) return false;
    switch (event) {
      case json::parse_event_t::object_start:
        keys.emplace_back();
        [[fallthrough]];
      case json::parse_event_t::array_start:
        if (depth >= kMaxDepth) problem = absl::StrCat("nested deeper than ", kMaxDepth, " levels");
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second) {
          problem = absl::StrCat("duplicate key ", parsed.dump());
        }
        break;
      default:
        break;
    }
    return problem.empty();
  };
  ordered_json root;
  try {
    root = ordered_json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    // A syntax error (parse_error), or a number too large for a double (out_of_range 406,
    // found by tests/fuzz/header_fuzz.cc). "[json.exception.parse_error.101] parse error at
    // line 1, column 2: ..." without the tag.
    std::string what = e.what();
    const size_t tag_end = what.find("] ");
    return absl::InvalidArgumentError(absl::StrCat(
        "bad header: ", tag_end == std::string::npos ? what : what.substr(tag_end + 2)));
  }
  if (!problem.empty()) return absl::InvalidArgumentError(absl::StrCat("bad header: ", problem));
  if (!root.is_object()) return absl::InvalidArgumentError("header is not a JSON object");

  SafetensorsHeader header;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return absl::InvalidArgumentError("__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("__metadata__ value of '", key, "' is not a string"));
        }
        header.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    auto fail = [&name = name](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", what));
    };
    if (!entry.is_object()) return fail("entry is not an object");
    auto dtype = entry.find("dtype");
    auto shape = entry.find("shape");
    auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) return fail("missing string 'dtype'");
    if (shape == entry.end() || !shape->is_array()) return fail("missing array 'shape'");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2) {
      return fail("'data_offsets' must be an array of two integers");
    }
    SafetensorsHeaderEntry tensor;
    tensor.name = name;
    tensor.dtype = dtype->get<std::string>();
    for (const ordered_json& dim : *shape) {
      absl::StatusOr<int64_t> value = NonNegativeInt(dim);
      if (!value.ok()) return fail(absl::StrCat("bad shape: ", value.status().message()));
      tensor.shape.push_back(*value);
    }
    absl::StatusOr<int64_t> begin = NonNegativeInt((*offsets)[0]);
    absl::StatusOr<int64_t> end = NonNegativeInt((*offsets)[1]);
    if (!begin.ok() || !end.ok()) return fail("data_offsets are not non-negative integers");
    if (*begin > *end) return fail("data_offsets are decreasing");
    tensor.begin = *begin;
    tensor.end = *end;
    header.tensors.push_back(std::move(tensor));
  }
  return header;
}

absl::StatusOr<std::string> SafetensorsHeaderJson(const SafetensorsHeader& header) {
  ordered_json root = ordered_json::object();
  if (!header.metadata.empty()) root["__metadata__"] = header.metadata;
  for (const SafetensorsHeaderEntry& tensor : header.tensors) {
    root[tensor.name] = {{"dtype", tensor.dtype},
                         {"shape", tensor.shape},
                         {"data_offsets", {tensor.begin, tensor.end}}};
  }
  try {
    return root.dump();
  } catch (const json::type_error& e) {  // Invalid UTF-8 in a name or value.
    return absl::InvalidArgumentError(absl::StrCat("cannot write the header: ", e.what()));
  }
}

}  // namespace vitserve::weights_internal
