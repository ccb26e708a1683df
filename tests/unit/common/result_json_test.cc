#include "common/result_json.h"

#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

TEST(ResultJsonTest, ClassificationKeepsItsFieldOrderAndSixSignificantDigits) {
  v1::Classification result;
  v1::ClassScore* score = result.add_classes();
  score->set_index(281);
  score->set_label("tabby");
  score->set_score(0.91f);  // 0.9100000262... as a double
  EXPECT_EQ(DumpJson(ClassificationToJson("cat.jpg", "m", result)),
            R"({"image":"cat.jpg","model":"m","classes":[{"index":281,"label":"tabby","score":0.91}]})");
}

TEST(ResultJsonTest, StringsAreEscapedAndInvalidUtf8IsReplaced) {
  v1::Classification result;
  v1::ClassScore* score = result.add_classes();
  score->set_label(std::string("a\"b\\c\n\x01", 7));
  score->set_score(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(DumpJson(ClassificationToJson("chat \xc3\xa9", "bad \xff", result)),
            "{\"image\":\"chat \xc3\xa9\",\"model\":\"bad \xef\xbf\xbd\",\"classes\":"
            R"([{"index":0,"label":"a\"b\\c\n\u0001","score":null}]})");
}

TEST(ResultJsonTest, WholeNumbersHaveNoFraction) {
  EXPECT_EQ(JsonNumber(2.0).dump(), "2");
  EXPECT_EQ(JsonNumber(-100.0000001).dump(), "-100");
  EXPECT_EQ(JsonNumber(200.25).dump(), "200.25");
  EXPECT_EQ(JsonNumber(1e300).dump(), "1e+300");
  EXPECT_TRUE(JsonNumber(std::numeric_limits<double>::infinity()).is_null());
}

TEST(ResultJsonTest, RoundSignificant) {
  EXPECT_EQ(RoundSignificant(1234.5678), 1234.57);
  EXPECT_EQ(RoundSignificant(0.000123456789), 0.000123457);
  EXPECT_EQ(RoundSignificant(0.0), 0.0);
  EXPECT_EQ(RoundSignificant(12345678901.0, 10), 12345678900.0);
}

TEST(ResultJsonTest, SegmentationNamesItsMaskFileOnlyWhenWritten) {
  v1::SegmentationMap map;
  map.set_width(4);
  map.set_height(3);
  map.set_mask("png!");
  EXPECT_EQ(DumpJson(SegmentationToJson("x.jpg", "seg", map, "")),
            R"({"image":"x.jpg","model":"seg","width":4,"height":3,"mask_png_bytes":4})");
  EXPECT_EQ(DumpJson(SegmentationToJson("x.jpg", "seg", map, "out/x.mask.png"))
                .find(R"("mask_file":"out/x.mask.png")") != std::string::npos,
            true);
}

}  // namespace
}  // namespace vitserve
