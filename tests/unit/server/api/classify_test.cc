#include "server/api/classify.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include <ATen/ATen.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/image/decode.h"
#include "server/image/preprocess.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

v1::ClassifyRequest RequestWith(int images, uint32_t top_k) {
  v1::ClassifyRequest request;
  for (int i = 0; i < images; ++i) {
    auto* raw = request.add_images()->mutable_raw();
    raw->set_width(4);
    raw->set_height(2);
    raw->set_rgb8(std::string(4 * 2 * 3, '\x80'));
  }
  request.set_top_k(top_k);
  return request;
}

TEST(ClassifyTest, TopKDefaultsToFiveCappedByClasses) {
  EXPECT_EQ(*ValidateClassifyRequest(RequestWith(1, 0), "m", ModelTask::kClassification, 1000, 5),
            5);
  EXPECT_EQ(*ValidateClassifyRequest(RequestWith(1, 0), "m", ModelTask::kClassification, 3, 5), 3);
  EXPECT_EQ(*ValidateClassifyRequest(RequestWith(1, 7), "m", ModelTask::kClassification, 10, 5), 7);
}

TEST(ClassifyTest, RejectsWhatCannotBeAnswered) {
  auto too_big =
      ValidateClassifyRequest(RequestWith(1, 11), "m", ModelTask::kClassification, 10, 5);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.status().message(), HasSubstr("1..10"));
  EXPECT_EQ(ValidateClassifyRequest(RequestWith(0, 0), "m", ModelTask::kClassification, 10, 5)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto detection = ValidateClassifyRequest(RequestWith(1, 0), "m", ModelTask::kDetection, 10, 5);
  EXPECT_EQ(detection.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(detection.status().message(), HasSubstr("detection"));
}

TEST(ClassifyTest, PreprocessesEveryImageAndNamesTheBadOne) {
  PreprocessSpec spec;
  spec.input_size = 8;
  v1::ClassifyRequest request = RequestWith(2, 0);
  std::string gradient(4 * 2 * 3, '\0');
  for (size_t i = 0; i < gradient.size(); ++i) gradient[i] = static_cast<char>(i * 10);
  request.mutable_images(1)->mutable_raw()->set_rgb8(gradient);
  auto batch = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->sizes(), (std::vector<int64_t>{2, 3, 8, 8}));
  // Each row is exactly that image's own preprocessing, in request order.
  for (int i = 0; i < 2; ++i) {
    const v1::RawImage& raw = request.images(i).raw();
    auto rgb = RgbImageFromRaw(raw.rgb8(), static_cast<int>(raw.width()),
                               static_cast<int>(raw.height()), ImageLimits{});
    ASSERT_TRUE(rgb.ok()) << rgb.status();
    auto alone = Preprocess(*rgb, spec);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_TRUE(at::equal((*batch)[i], alone->tensor)) << "row " << i;
  }
  EXPECT_FALSE(at::equal((*batch)[0], (*batch)[1])) << "the test images must differ";

  request.add_images()->set_encoded("not an image");
  auto bad = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("image 2: "));

  request.mutable_images(0)->mutable_raw()->set_rgb8("short");
  EXPECT_THAT(DecodeAndPreprocess(request.images(), ImageLimits{}, spec).status().message(),
              HasSubstr("image 0: "));
  request.mutable_images(0)->Clear();
  EXPECT_THAT(DecodeAndPreprocess(request.images(), ImageLimits{}, spec).status().message(),
              HasSubstr("image 0: empty"));
}

// With device preprocessing, same-size images travel as they are, one uint8 [N,H,W,3] tensor in
// request order (raw and decoded alike); mixed sizes, or images over twice what the model
// resizes to, are preprocessed here as before.
TEST(ClassifyTest, DevicePreprocessingSendsSameSizeImagesAsPixels) {
  PreprocessSpec spec;
  spec.input_size = 8;  // Resized to 9 on the shorter side.
  spec.on_device = true;
  v1::ClassifyRequest request = RequestWith(2, 0);
  std::string gradient(4 * 2 * 3, '\0');
  for (size_t i = 0; i < gradient.size(); ++i) gradient[i] = static_cast<char>(i * 10);
  request.mutable_images(1)->mutable_raw()->set_rgb8(gradient);
  auto pixels = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  EXPECT_EQ(pixels->scalar_type(), at::kByte);
  EXPECT_EQ(pixels->sizes(), (std::vector<int64_t>{2, 2, 4, 3}));
  for (int i = 0; i < 2; ++i) {
    const std::string& bytes = request.images(i).raw().rgb8();
    EXPECT_EQ(std::memcmp((*pixels)[i].data_ptr(), bytes.data(), bytes.size()), 0) << i;
  }

  // A third image of another size: the whole request is preprocessed on the CPU.
  auto* other = request.add_images()->mutable_raw();
  other->set_width(3);
  other->set_height(3);
  other->set_rgb8(std::string(27, '\x10'));
  auto rows = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->scalar_type(), at::kFloat);
  EXPECT_EQ(rows->sizes(), (std::vector<int64_t>{3, 3, 8, 8}));
  spec.on_device = false;
  auto cpu = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(at::equal(*rows, *cpu));

  // 18 pixels on the shorter side is exactly twice 9: still the device's; 19 is not.
  spec.on_device = true;
  for (const auto& [side, on_device] : std::vector<std::pair<int, bool>>{{18, true}, {19, false}}) {
    v1::ClassifyRequest large;
    auto* raw = large.add_images()->mutable_raw();
    raw->set_width(static_cast<uint32_t>(side));
    raw->set_height(static_cast<uint32_t>(side));
    raw->set_rgb8(std::string(static_cast<size_t>(side * side * 3), '\x20'));
    auto out = DecodeAndPreprocess(large.images(), ImageLimits{}, spec);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->scalar_type() == at::kByte, on_device) << side;
  }

  // Errors keep naming the image.
  request.mutable_images(1)->mutable_raw()->set_rgb8("short");
  EXPECT_THAT(DecodeAndPreprocess(request.images(), ImageLimits{}, spec).status().message(),
              HasSubstr("image 1: "));
}

// A request may not carry more images than --max-images-per-request: each becomes a model
// input row whatever its encoded size, so tiny images would otherwise multiply memory.
TEST(ClassifyTest, RefusesMoreImagesThanTheLimit) {
  PreprocessSpec spec;
  spec.input_size = 8;
  ImageLimits limits;
  limits.max_images_per_request = 3;
  EXPECT_TRUE(DecodeAndPreprocess(RequestWith(3, 0).images(), limits, spec).ok());
  auto refused = DecodeAndPreprocess(RequestWith(4, 0).images(), limits, spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-images-per-request"));
}

// A JPEG whose EXIF orientation turns it (stored 320x240, shown 240x320) decodes to another
// size than its header says: with device preprocessing the request falls back to the CPU path
// instead of mixing sizes, and gives exactly what that path gives.
TEST(ClassifyTest, DevicePreprocessingFallsBackForARotatedJpeg) {
  std::ifstream file(std::string(VITSERVE_SAMPLE_DIR) + "/sunset_exif_rotated_240x320.jpg",
                     std::ios::binary);
  ASSERT_TRUE(file.good());
  const std::string jpeg((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  v1::ClassifyRequest request;
  request.add_images()->set_encoded(jpeg);
  PreprocessSpec spec;
  spec.input_size = 224;
  spec.crop_pct = 1.0;  // Resized to 224 on the shorter side: within twice, so device-eligible.
  spec.on_device = true;
  auto device = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_EQ(device->scalar_type(), at::kFloat);
  spec.on_device = false;
  auto cpu = DecodeAndPreprocess(request.images(), ImageLimits{}, spec);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(at::equal(*device, *cpu));
}

TEST(ClassifyTest, RanksClassesWithLabels) {
  const at::Tensor logits = at::tensor({0.0f, 2.0f, 1.0f, 0.0f, 0.0f, 3.0f}).view({2, 3});
  v1::ClassifyResponse response;
  ASSERT_TRUE(FillClassifications(logits, 2, {"cat", "dog"}, &response).ok());
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).classes(0).index(), 1);
  EXPECT_EQ(response.results(0).classes(0).label(), "dog");
  EXPECT_EQ(response.results(0).classes(1).label(), "2");  // No label: the index.
  EXPECT_EQ(response.results(1).classes(0).index(), 2);
  EXPECT_GT(response.results(0).classes(0).score(), response.results(0).classes(1).score());
}

}  // namespace
}  // namespace vitserve
