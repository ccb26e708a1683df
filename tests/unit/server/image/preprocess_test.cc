#include "server/image/preprocess.h"

#include <ATen/ATen.h>

#include <opencv2/core.hpp>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/image/image.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

RgbImage Solid(int width, int height, cv::Vec3b rgb) {
  return RgbImage{cv::Mat(height, width, CV_8UC3, cv::Scalar(rgb[0], rgb[1], rgb[2]))};
}

struct GeometryCase {
  int width, height;
  int resized_width, resized_height;
  int crop_x, crop_y;
};

TEST(PreprocessTest, ResizesShorterSideAndCentreCrops) {
  // Default spec: 224 / 0.875 = 256 on the shorter side, longer side truncated like
  // torchvision; crop offsets rounded half-to-even like Python's round().
  const GeometryCase cases[] = {
      {640, 480, 341, 256, 58, 16},                                // (341 - 224) / 2 = 58.5 -> 58.
      {480, 640, 256, 341, 16, 58}, {200, 300, 256, 384, 16, 80},  // Upscaled portrait.
      {10, 5, 512, 256, 144, 16},                                  // Tiny: upscaled.
      {256, 256, 256, 256, 16, 16},                                // No resize at all.
      {1, 1, 256, 256, 16, 16},     {3000, 1000, 768, 256, 272, 16},
  };
  for (const GeometryCase& c : cases) {
    SCOPED_TRACE(testing::Message() << c.width << "x" << c.height);
    absl::StatusOr<PreprocessedImage> out =
        Preprocess(Solid(c.width, c.height, {10, 20, 30}), PreprocessSpec());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_THAT(out->tensor.sizes(), ElementsAre(3, 224, 224));
    EXPECT_EQ(out->tensor.scalar_type(), at::kFloat);
    EXPECT_TRUE(out->tensor.is_contiguous());
    const CropGeometry& g = out->geometry;
    EXPECT_EQ(g.original_width, c.width);
    EXPECT_EQ(g.original_height, c.height);
    EXPECT_EQ(g.resized_width, c.resized_width);
    EXPECT_EQ(g.resized_height, c.resized_height);
    EXPECT_EQ(g.crop_x, c.crop_x);
    EXPECT_EQ(g.crop_y, c.crop_y);
    EXPECT_DOUBLE_EQ(g.scale, 256.0 / std::min(c.width, c.height));
  }
}

TEST(PreprocessTest, HonoursInputSizeAndCropPct) {
  PreprocessSpec spec;
  spec.input_size = 384;
  spec.crop_pct = 1.0;
  absl::StatusOr<PreprocessedImage> out = Preprocess(Solid(800, 600, {1, 2, 3}), spec);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->tensor.sizes(), ElementsAre(3, 384, 384));
  EXPECT_EQ(out->geometry.resized_width, 512);
  EXPECT_EQ(out->geometry.resized_height, 384);
  EXPECT_EQ(out->geometry.crop_x, 64);
  EXPECT_EQ(out->geometry.crop_y, 0);
}

TEST(PreprocessTest, NormalisesConstantColourExactly) {
  const PreprocessSpec spec;
  for (const auto& [w, h] : {std::pair{640, 480}, std::pair{100, 120}}) {  // Down and up.
    absl::StatusOr<PreprocessedImage> out = Preprocess(Solid(w, h, {10, 128, 250}), spec);
    ASSERT_TRUE(out.ok()) << out.status();
    const float values[3] = {10, 128, 250};
    for (int c = 0; c < 3; ++c) {
      const float expected = (values[c] / 255.0f - spec.mean[c]) / spec.std[c];
      EXPECT_EQ(out->tensor[c].min().item<float>(), expected) << "channel " << c;
      EXPECT_EQ(out->tensor[c].max().item<float>(), expected) << "channel " << c;
    }
  }
}

TEST(PreprocessTest, KeepsRgbChannelOrder) {
  absl::StatusOr<PreprocessedImage> out =
      Preprocess(Solid(300, 300, {255, 0, 0}), PreprocessSpec());
  ASSERT_TRUE(out.ok()) << out.status();
  const at::Tensor means = out->tensor.mean({1, 2});
  EXPECT_NEAR(means[0].item<float>(), (1.0f - 0.485f) / 0.229f, 1e-5);
  EXPECT_NEAR(means[1].item<float>(), -0.456f / 0.224f, 1e-5);
  EXPECT_NEAR(means[2].item<float>(), -0.406f / 0.225f, 1e-5);
}

TEST(PreprocessTest, KeepsSpatialLayout) {
  // Left half red, right half blue; 448 -> 224 with crop_pct 1 halves it exactly.
  cv::Mat rgb(448, 448, CV_8UC3, cv::Scalar(0, 0, 255));
  rgb(cv::Rect(0, 0, 224, 448)).setTo(cv::Scalar(255, 0, 0));
  PreprocessSpec spec;
  spec.crop_pct = 1.0;
  absl::StatusOr<PreprocessedImage> out = Preprocess(RgbImage{rgb}, spec);
  ASSERT_TRUE(out.ok()) << out.status();
  const float high_r = (1.0f - 0.485f) / 0.229f;
  const float high_b = (1.0f - 0.406f) / 0.225f;
  EXPECT_FLOAT_EQ(out->tensor[0][100][0].item<float>(), high_r);
  EXPECT_FLOAT_EQ(out->tensor[0][100][111].item<float>(), high_r);
  EXPECT_FLOAT_EQ(out->tensor[2][100][112].item<float>(), high_b);
  EXPECT_FLOAT_EQ(out->tensor[2][100][223].item<float>(), high_b);
  EXPECT_LT(out->tensor[0][100][200].item<float>(), 0.0f);
}

TEST(PreprocessTest, BilinearAndBicubicBothWork) {
  for (Interpolation interpolation : {Interpolation::kBilinear, Interpolation::kBicubic}) {
    PreprocessSpec spec;
    spec.interpolation = interpolation;
    absl::StatusOr<PreprocessedImage> out = Preprocess(Solid(50, 40, {9, 9, 9}), spec);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_THAT(out->tensor.sizes(), ElementsAre(3, 224, 224));
  }
}

TEST(PreprocessTest, RejectsBadSpecAndImage) {
  PreprocessSpec spec;
  spec.crop_pct = 1.5;
  EXPECT_THAT(Preprocess(Solid(8, 8, {0, 0, 0}), spec).status().message(), HasSubstr("crop_pct"));
  spec = PreprocessSpec();
  spec.input_size = 0;
  EXPECT_THAT(Preprocess(Solid(8, 8, {0, 0, 0}), spec).status().message(), HasSubstr("input_size"));
  spec = PreprocessSpec();
  spec.std[1] = 0.0f;
  EXPECT_EQ(Preprocess(Solid(8, 8, {0, 0, 0}), spec).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Preprocess(RgbImage{}, PreprocessSpec()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Preprocess(RgbImage{cv::Mat(8, 8, CV_8UC1)}, PreprocessSpec()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve
