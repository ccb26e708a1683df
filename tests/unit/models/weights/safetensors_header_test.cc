#include "models/weights/internal/safetensors_header.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve::weights_internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(SafetensorsHeaderTest, ReadsMetadataAndTensorsInFileOrder) {
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(
      R"({"__metadata__": {"format": "pt"}, "z": {"dtype": "F16", "shape": [2, 3],
          "data_offsets": [0, 12]}, "a": {"dtype": "F32", "shape": [], "data_offsets": [12, 16]}})");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->metadata.at("format"), "pt");
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[0].name, "z");
  EXPECT_EQ(header->tensors[0].dtype, "F16");
  EXPECT_THAT(header->tensors[0].shape, ElementsAre(2, 3));
  EXPECT_EQ(header->tensors[1].name, "a");
  EXPECT_TRUE(header->tensors[1].shape.empty());
  EXPECT_EQ(header->tensors[1].begin, 12);
  EXPECT_EQ(header->tensors[1].end, 16);
}

TEST(SafetensorsHeaderTest, OffsetsBeyondTwoToTheFiftyThirdAreExact) {
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(
      R"({"w": {"dtype": "U8", "shape": [1], "data_offsets": [9007199254740993, 9007199254740994]}})");
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->tensors[0].begin, 9007199254740993);  // 2^53 + 1: not a double
}

TEST(SafetensorsHeaderTest, RefusesWhatIsNotAHeader) {
  struct Case {
    std::string text;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {"{not json}", "bad header: parse error"},
           {R"({"x": 1, "x": 2})", "bad header: duplicate key \"x\""},
           {std::string(100, '[') + std::string(100, ']'), "nested deeper than 64"},
           {"[]", "not a JSON object"},
           {R"({"__metadata__": {"k": 1}})", "__metadata__ value of 'k' is not a string"},
           {R"({"w": 3})", "tensor 'w': entry is not an object"},
           {R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "missing string 'dtype'"},
           {R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})",
            "bad shape: 1.5 is not an integer"},
           {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
            "bad shape: -1 is negative"},
           {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})",
            "two integers"},
           {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", "decreasing"},
           {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]}})",
            "not non-negative integers"},
           {"{\"w\xff\": 1}", "bad header"},  // invalid UTF-8
           // A number beyond a double's range (nlohmann-json throws out_of_range, not
           // parse_error): found by header_fuzz.
           {R"({"_tAadata__":888888888888888e880.2})", "bad header: number overflow"},
       }) {
    absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(c.text);
    EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(header.status().message(), HasSubstr(c.says)) << c.text;
  }
}

TEST(SafetensorsHeaderTest, WritesWhatItReads) {
  SafetensorsHeader header;
  header.metadata["format"] = "pt";
  header.metadata["quote\"d"] = "line\nbreak";
  header.tensors.push_back({"b.weight", "BF16", {4, 2}, 0, 16});
  header.tensors.push_back({"a", "F32", {}, 16, 20});
  absl::StatusOr<std::string> json = SafetensorsHeaderJson(header);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->rfind(R"({"__metadata__":{"format":"pt")", 0), 0u) << *json;
  absl::StatusOr<SafetensorsHeader> again = ParseSafetensorsHeader(*json);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->metadata, header.metadata);
  EXPECT_EQ(again->tensors, header.tensors);

  header.tensors.push_back({"bad \xff name", "F32", {}, 20, 24});
  EXPECT_EQ(SafetensorsHeaderJson(header).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve::weights_internal
