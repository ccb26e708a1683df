#include "server/api/deferred_classify.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/test_util/wire_bytes_testing.h"
#include "server/api/classify.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;
using testing::BufferOf;
using testing::MutatedBytes;

std::string Pixels(int width, int height, int seed) {
  std::string pixels(static_cast<size_t>(width) * height * 3, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>(i * 7 + seed * 31);
  return pixels;
}

v1::ClassifyRequest RawRequest(int images, int width, int height) {
  v1::ClassifyRequest request;
  request.set_model("deit_tiny_patch16_224");
  request.set_top_k(3);
  request.set_request_id("req-42");
  for (int i = 0; i < images; ++i) {
    v1::RawImage* raw = request.add_images()->mutable_raw();
    raw->set_width(static_cast<uint32_t>(width));
    raw->set_height(static_cast<uint32_t>(height));
    raw->set_rgb8(Pixels(width, height, i));
  }
  return request;
}

// The request `deferred` stands for: its fields with each image's pixels copied back from the
// buffer.
v1::ClassifyRequest Rebuilt(const DeferredClassifyRequest& deferred,
                            const grpc::ByteBuffer& buffer) {
  size_t total = 0;
  for (const ByteRange& range : deferred.pixels) total += range.size;
  std::string pixels(total, '\0');
  EXPECT_TRUE(
      CopyByteRanges(buffer, deferred.pixels, reinterpret_cast<uint8_t*>(pixels.data())).ok());
  v1::ClassifyRequest request = deferred.request;
  size_t at = 0;
  for (size_t i = 0; i < deferred.pixels.size(); ++i) {
    request.mutable_images(static_cast<int>(i))
        ->mutable_raw()
        ->set_rgb8(pixels.substr(at, deferred.pixels[i].size));
    at += deferred.pixels[i].size;
  }
  return request;
}

TEST(DeferredClassifyTest, ReadsTheFieldsAndLeavesThePixelsInTheBuffer) {
  const v1::ClassifyRequest request = RawRequest(3, 5, 4);
  const std::string bytes = request.SerializeAsString();
  for (const size_t slice_size : {size_t{1}, size_t{7}, size_t{64}, bytes.size()}) {
    const grpc::ByteBuffer buffer = BufferOf(bytes, slice_size);
    std::optional<DeferredClassifyRequest> deferred = ReadDeferredClassifyRequest(buffer);
    ASSERT_TRUE(deferred.has_value()) << slice_size;
    EXPECT_EQ(deferred->request.model(), "deit_tiny_patch16_224");
    EXPECT_EQ(deferred->request.top_k(), 3u);
    EXPECT_EQ(deferred->request.request_id(), "req-42");
    ASSERT_EQ(deferred->request.images_size(), 3);
    ASSERT_EQ(deferred->pixels.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      const v1::RawImage& raw = deferred->request.images(i).raw();
      EXPECT_EQ(raw.width(), 5u);
      EXPECT_EQ(raw.height(), 4u);
      EXPECT_TRUE(raw.rgb8().empty());  // Not copied.
      EXPECT_EQ(deferred->pixels[static_cast<size_t>(i)].size, 60u);
      // The range is where the pixels are in the serialised bytes.
      EXPECT_EQ(bytes.substr(deferred->pixels[static_cast<size_t>(i)].offset, 60),
                request.images(i).raw().rgb8());
    }
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Rebuilt(*deferred, buffer),
                                                                  request))
        << slice_size;
  }
}

TEST(DeferredClassifyTest, GivesUpOnAnyOtherShapeForProtobufToParse) {
  auto read = [](const std::string& bytes) {
    return ReadDeferredClassifyRequest(BufferOf(bytes, 16)).has_value();
  };
  const v1::ClassifyRequest raw = RawRequest(2, 3, 2);
  ASSERT_TRUE(read(raw.SerializeAsString()));

  v1::ClassifyRequest encoded = raw;
  encoded.mutable_images(1)->set_encoded("\xff\xd8\xff");
  EXPECT_FALSE(read(encoded.SerializeAsString()));

  v1::ClassifyRequest empty_image = raw;
  empty_image.add_images();
  EXPECT_FALSE(read(empty_image.SerializeAsString()));

  v1::ClassifyRequest accented = raw;
  accented.set_model("mod\xc3\xa8le");  // Valid UTF-8, left to protobuf to check.
  EXPECT_FALSE(read(accented.SerializeAsString()));

  // A field ClassifyRequest does not have (9, varint 1), appended.
  EXPECT_FALSE(read(raw.SerializeAsString() + std::string("\x48\x01", 2)));
  // A second width inside the first raw image: protobuf keeps the last; this reader gives up.
  v1::ClassifyRequest one_image;
  v1::RawImage* first = one_image.add_images()->mutable_raw();
  first->set_width(3);
  std::string twice = one_image.SerializeAsString();  // 12 04 12 02 08 03
  ASSERT_EQ(twice, std::string("\x12\x04\x12\x02\x08\x03", 6));
  EXPECT_FALSE(read(std::string("\x12\x06\x12\x04\x08\x03\x08\x04", 8)));
  // A second raw message in one image (protobuf merges them).
  EXPECT_FALSE(read(std::string("\x12\x08\x12\x02\x08\x03\x12\x02\x10\x02", 10)));

  // Truncated or malformed: protobuf refuses these too.
  const std::string bytes = raw.SerializeAsString();
  // The last: top_k's tag (0x18) spelt in six bytes, which CodedInputStream reads (up to ten)
  // and protobuf's parser does not (five at most).
  for (const std::string& bad :
       {bytes.substr(0, bytes.size() - 1), bytes.substr(0, 5), bytes + std::string(1, '\0'),
        std::string("\x12\xff", 2), std::string("\x98\x80\x80\x80\x80\x00\x01", 7)}) {
    EXPECT_FALSE(read(bad));
    v1::ClassifyRequest parsed;
    EXPECT_FALSE(parsed.ParseFromString(bad));
  }
  // A request of no images (only top_k 0) is read too: RunClassify refuses it.
  std::optional<DeferredClassifyRequest> empty =
      ReadDeferredClassifyRequest(BufferOf(std::string("\x18\x00", 2), 16));
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->request.images_size(), 0);
}

// Differential: for every mutation of a request that the reader accepts, protobuf parses the
// same bytes to the same message (pixels included). Mutations: random bytes overwritten,
// inserted or removed, and cuts.
TEST(DeferredClassifyTest, WhatItReadsIsWhatProtobufParses) {
  v1::ClassifyRequest request = RawRequest(2, 3, 2);
  request.mutable_images(1)->mutable_raw()->set_width(1);  // Sizes need not agree to be read.
  const std::string original = request.SerializeAsString();
  std::mt19937 rng(20261204);
  int accepted = 0;
  int refused = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const std::string bytes = MutatedBytes(original, rng);
    const grpc::ByteBuffer buffer = BufferOf(bytes, 1 + rng() % 20);
    std::optional<DeferredClassifyRequest> deferred = ReadDeferredClassifyRequest(buffer);
    if (!deferred.has_value()) {
      ++refused;
      continue;
    }
    ++accepted;
    v1::ClassifyRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes)) << "trial " << trial;
    ASSERT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Rebuilt(*deferred, buffer),
                                                                   parsed))
        << "trial " << trial;
  }
  // Both outcomes were exercised (pixel bytes change freely; most header bytes do not).
  EXPECT_GT(accepted, 1000);
  EXPECT_GT(refused, 1000);
}

// DeferredPixelsInput is DecodeAndPreprocess for these requests: the same input tensor, the
// same errors.
TEST(DeferredClassifyTest, InputAndErrorsAreDecodeAndPreprocesss) {
  PreprocessSpec spec;
  spec.input_size = 8;  // Resized to 9 on the shorter side: 5x4 pixels go to the device.
  spec.on_device = true;
  ImageLimits limits;
  auto check = [&](const v1::ClassifyRequest& request) {
    SCOPED_TRACE(request.ShortDebugString().substr(0, 80));
    const grpc::ByteBuffer buffer = BufferOf(request.SerializeAsString(), 13);
    std::optional<DeferredClassifyRequest> deferred = ReadDeferredClassifyRequest(buffer);
    ASSERT_TRUE(deferred.has_value());
    ASSERT_TRUE(TakesDeferredPixels(*deferred, spec));
    absl::StatusOr<at::Tensor> ours = DeferredPixelsInput(*deferred, buffer, limits, spec);
    absl::StatusOr<at::Tensor> theirs = DecodeAndPreprocess(request.images(), limits, spec);
    ASSERT_EQ(ours.status(), theirs.status());
    if (ours.ok()) {
      EXPECT_EQ(ours->scalar_type(), at::kByte);
      EXPECT_TRUE(at::equal(*ours, *theirs));
    }
  };
  check(RawRequest(1, 5, 4));
  check(RawRequest(3, 5, 4));
  v1::ClassifyRequest short_pixels = RawRequest(2, 5, 4);
  short_pixels.mutable_images(1)->mutable_raw()->mutable_rgb8()->pop_back();
  check(short_pixels);
  limits.max_images_per_request = 2;
  check(RawRequest(3, 5, 4));
  limits = ImageLimits{};
  limits.max_pixels = 19;
  check(RawRequest(1, 5, 4));

  {
    const v1::ClassifyRequest request = RawRequest(1, 5, 4);
    const grpc::ByteBuffer buffer = BufferOf(request.SerializeAsString(), 13);
    std::optional<DeferredClassifyRequest> deferred = ReadDeferredClassifyRequest(buffer);
    ASSERT_TRUE(deferred.has_value());
    spec.on_device = false;  // Preprocessed on the CPU: the request is parsed whole instead.
    EXPECT_FALSE(TakesDeferredPixels(*deferred, spec));
    absl::StatusOr<at::Tensor> refused = DeferredPixelsInput(*deferred, buffer, limits, spec);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInternal);
    spec.on_device = true;
    // 40x40 is more than twice the 9 pixels it is resized to: the CPU shrinks it.
    deferred->request.mutable_images(0)->mutable_raw()->set_width(40);
    deferred->request.mutable_images(0)->mutable_raw()->set_height(40);
    EXPECT_FALSE(TakesDeferredPixels(*deferred, spec));
  }
}

TEST(DeferredClassifyTest, CopyByteRangesRefusesRangesOutsideTheBuffer) {
  const grpc::ByteBuffer buffer = BufferOf("abcdefghij", 3);
  std::string out(4, '\0');
  auto* dst = reinterpret_cast<uint8_t*>(out.data());
  ASSERT_TRUE(CopyByteRanges(buffer, {ByteRange{1, 2}, ByteRange{7, 2}}, dst).ok());
  EXPECT_EQ(out, "bchi");
  EXPECT_THAT(CopyByteRanges(buffer, {ByteRange{8, 4}}, dst).message(),
              HasSubstr("not within the request's 10 bytes"));
  EXPECT_FALSE(CopyByteRanges(buffer, {ByteRange{5, 1}, ByteRange{2, 1}}, dst).ok());
}

}  // namespace
}  // namespace vitserve
