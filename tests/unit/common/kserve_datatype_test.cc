#include "common/kserve_datatype.h"

#include "gtest/gtest.h"

namespace vitserve {
namespace {

TEST(KServeDatatypeBytesTest, EveryFixedSizeDatatypeOfTheProtocol) {
  for (const char* datatype : {"BOOL", "UINT8", "INT8"}) {
    EXPECT_EQ(KServeDatatypeBytes(datatype), 1) << datatype;
  }
  for (const char* datatype : {"FP16", "BF16", "UINT16", "INT16"}) {
    EXPECT_EQ(KServeDatatypeBytes(datatype), 2) << datatype;
  }
  for (const char* datatype : {"FP32", "UINT32", "INT32"}) {
    EXPECT_EQ(KServeDatatypeBytes(datatype), 4) << datatype;
  }
  for (const char* datatype : {"FP64", "UINT64", "INT64"}) {
    EXPECT_EQ(KServeDatatypeBytes(datatype), 8) << datatype;
  }
}

TEST(KServeDatatypeBytesTest, VariableLengthAndUnknownNamesHaveNoSize) {
  EXPECT_EQ(KServeDatatypeBytes("BYTES"), 0);
  EXPECT_EQ(KServeDatatypeBytes("fp32"), 0);  // The protocol's names are upper case.
  EXPECT_EQ(KServeDatatypeBytes("FLOAT"), 0);
  EXPECT_EQ(KServeDatatypeBytes(""), 0);
}

}  // namespace
}  // namespace vitserve
