#include "client/json_writer.h"

#include <limits>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(JsonWriterTest, EscapesStrings) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(JsonQuote("line\nnext\ttab\r"), R"("line\nnext\ttab\r")");
  EXPECT_EQ(JsonQuote(std::string("\x01\x1f", 2)), R"("\u0001\u001f")");
  EXPECT_EQ(JsonQuote(std::string("nul\0x", 5)), R"("nul\u0000x")");
  EXPECT_EQ(JsonQuote("chat \xc3\xa9"), "\"chat \xc3\xa9\"");  // UTF-8 passes through
}

TEST(JsonWriterTest, WritesNestedContainersWithCommas) {
  JsonWriter w;
  w.BeginObject().Key("a").Int(1).Key("b").BeginArray().Int(2).String("x").BeginObject()
      .EndObject().EndArray().Key("c").Bool(false).Key("d").Null().EndObject();
  EXPECT_EQ(w.str(), R"({"a":1,"b":[2,"x",{}],"c":false,"d":null})");
}

TEST(JsonWriterTest, NumbersAreFiniteOrNull) {
  JsonWriter w;
  w.BeginArray()
      .Number(0.91f)
      .Number(1234.5)
      .Number(std::numeric_limits<double>::quiet_NaN())
      .Number(std::numeric_limits<double>::infinity())
      .Int(-7)
      .EndArray();
  EXPECT_EQ(w.str(), "[0.91,1234.5,null,null,-7]");
}

TEST(JsonWriterTest, EscapesKeys) {
  JsonWriter w;
  w.BeginObject().Key("we\"ird").String("v").EndObject();
  EXPECT_EQ(w.str(), R"({"we\"ird":"v"})");
}

}  // namespace
}  // namespace vitserve::client
