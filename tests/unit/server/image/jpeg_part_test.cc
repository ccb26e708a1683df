#include "server/image/jpeg_part.h"

#include <ATen/ATen.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/image/gpu_jpeg_decoder.h"

namespace vitserve {
namespace {

// Files of different lengths come back byte for byte with their sizes, in order; the part is
// as wide as the longest file and its prefix.
TEST(JpegPartTest, HoldsEachFileAndItsSizeInOrder) {
  const std::string a = "\xFF\xD8 first file \xFF\xD9";
  const std::string b(1000, '\x7F');
  const std::vector<EncodedJpeg> jpegs = {{a, 640, 480}, {b, 3, 2}};
  const std::vector<int64_t> sizes = JpegPartSizes(jpegs);
  EXPECT_EQ(sizes, (std::vector<int64_t>{2, kJpegPartPrefixBytes + 1000}));
  at::Tensor part = at::full(sizes, 0x55, at::kByte);  // Padding must be overwritten.
  FillJpegPart(jpegs, part);
  ASSERT_TRUE(IsJpegPart(part));
  for (int64_t row = 0; row < 2; ++row) {
    const EncodedJpeg got = JpegInPart(part, row);
    EXPECT_EQ(got.bytes, jpegs[static_cast<size_t>(row)].bytes) << row;
    EXPECT_EQ(got.width, jpegs[static_cast<size_t>(row)].width);
    EXPECT_EQ(got.height, jpegs[static_cast<size_t>(row)].height);
  }
  // The shorter row is zero-padded after its file.
  const uint8_t* row0 = part.data_ptr<uint8_t>();
  for (int64_t i = kJpegPartPrefixBytes + static_cast<int64_t>(a.size()); i < part.size(1); ++i) {
    ASSERT_EQ(row0[i], 0) << i;
  }
}

// Only a contiguous CPU uint8 [N, W > prefix] tensor is a JPEG part; images ([N,H,W,3]) and
// float rows are not. A row whose length does not fit the part reads as no file.
TEST(JpegPartTest, TellsJpegPartsFromOtherPartsAndRefusesBadLengths) {
  EXPECT_TRUE(IsJpegPart(at::zeros({1, kJpegPartPrefixBytes + 1}, at::kByte)));
  EXPECT_FALSE(IsJpegPart(at::zeros({1, kJpegPartPrefixBytes}, at::kByte)));
  EXPECT_FALSE(IsJpegPart(at::zeros({0, 64}, at::kByte)));
  EXPECT_FALSE(IsJpegPart(at::zeros({2, 4, 4, 3}, at::kByte)));
  EXPECT_FALSE(IsJpegPart(at::zeros({2, 64}, at::kFloat)));
  EXPECT_FALSE(IsJpegPart(at::zeros({64, 2}, at::kByte).t()));  // Not contiguous.
  EXPECT_FALSE(IsJpegPart(at::Tensor()));

  const std::string file = "0123456789";
  at::Tensor part = at::empty(JpegPartSizes({{file, 5, 5}}), at::kByte);
  FillJpegPart({{file, 5, 5}}, part);
  int64_t too_long = part.size(1);  // More than the row holds after its prefix.
  std::memcpy(part.data_ptr<uint8_t>() + 8, &too_long, sizeof(too_long));
  EXPECT_TRUE(JpegInPart(part, 0).bytes.empty());
  int64_t negative = -1;
  std::memcpy(part.data_ptr<uint8_t>() + 8, &negative, sizeof(negative));
  EXPECT_TRUE(JpegInPart(part, 0).bytes.empty());
}

// The decoder starts only in a build with nvJPEG (on a GPU); where it cannot start it says
// why: a build without nvJPEG names nvJPEG, and nvJPEG's own start fails without a GPU. (The
// CUDA tests decode.)
TEST(GpuJpegDecoderTest, StartsOnlyWithNvjpegAndSaysWhyNot) {
  absl::StatusOr<std::unique_ptr<GpuJpegDecoder>> decoder = GpuJpegDecoder::Create();
  if (decoder.ok()) {
    EXPECT_TRUE(GpuJpegDecodingBuilt());
    return;
  }
  EXPECT_FALSE(decoder.status().message().empty());
  if (!GpuJpegDecodingBuilt()) {
    EXPECT_EQ(decoder.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(decoder.status().message().find("nvJPEG"), std::string::npos);
  }
}

}  // namespace
}  // namespace vitserve
