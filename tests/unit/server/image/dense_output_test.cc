// Detection and segmentation outputs back in original pixels (server/image/dense_output.h).
#include "server/image/dense_output.h"

#include <ATen/ATen.h>

#include <cstring>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

PreprocessSpec Spec224() { return PreprocessSpec(); }

TEST(GeometryForTest, StretchLetterboxAndCrop) {
  absl::StatusOr<InputGeometry> stretch = GeometryFor(ResizeMode::kStretch, 640, 480, Spec224());
  ASSERT_TRUE(stretch.ok());
  EXPECT_DOUBLE_EQ(stretch->scale_x, 0.35);
  EXPECT_DOUBLE_EQ(stretch->scale_y, 224.0 / 480);
  EXPECT_EQ(stretch->content, cv::Rect(0, 0, 224, 224));

  absl::StatusOr<InputGeometry> wide = GeometryFor(ResizeMode::kLetterbox, 640, 480, Spec224());
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(wide->content, cv::Rect(0, 28, 224, 168));  // Bands above and below.
  EXPECT_DOUBLE_EQ(wide->scale_x, 0.35);
  EXPECT_DOUBLE_EQ(wide->scale_y, 0.35);
  EXPECT_DOUBLE_EQ(wide->offset_y, 28);
  absl::StatusOr<InputGeometry> tall = GeometryFor(ResizeMode::kLetterbox, 300, 600, Spec224());
  ASSERT_TRUE(tall.ok());
  EXPECT_EQ(tall->content, cv::Rect(56, 0, 112, 224));  // Bands left and right.

  // The centre crop agrees with Preprocess's CropGeometry: 640x480 -> 341x256, crop at (58, 16).
  absl::StatusOr<InputGeometry> crop = GeometryFor(ResizeMode::kCenterCrop, 640, 480, Spec224());
  ASSERT_TRUE(crop.ok());
  const CropGeometry expected = ComputeCropGeometry(640, 480, Spec224());
  EXPECT_DOUBLE_EQ(crop->scale_x, static_cast<double>(expected.resized_width) / 640);
  EXPECT_DOUBLE_EQ(crop->offset_x, -expected.crop_x);
  EXPECT_DOUBLE_EQ(crop->offset_y, -expected.crop_y);

  EXPECT_FALSE(GeometryFor(ResizeMode::kStretch, 0, 10, Spec224()).ok());
  PreprocessSpec bad = Spec224();
  bad.input_size = 0;
  EXPECT_FALSE(GeometryFor(ResizeMode::kStretch, 10, 10, bad).ok());
}

TEST(BoxToOriginalTest, InvertsEveryModeAndClips) {
  const PixelBox original{100, 50, 300, 400};
  for (ResizeMode mode : {ResizeMode::kCenterCrop, ResizeMode::kStretch, ResizeMode::kLetterbox}) {
    SCOPED_TRACE(static_cast<int>(mode));
    const InputGeometry g = *GeometryFor(mode, 640, 480, Spec224());
    const PixelBox in_input{static_cast<float>(original.x1 * g.scale_x + g.offset_x),
                            static_cast<float>(original.y1 * g.scale_y + g.offset_y),
                            static_cast<float>(original.x2 * g.scale_x + g.offset_x),
                            static_cast<float>(original.y2 * g.scale_y + g.offset_y)};
    const PixelBox back = BoxToOriginal(in_input, g);
    EXPECT_NEAR(back.x1, original.x1, 1e-3);
    EXPECT_NEAR(back.y1, original.y1, 1e-3);
    EXPECT_NEAR(back.x2, original.x2, 1e-3);
    EXPECT_NEAR(back.y2, original.y2, 1e-3);
  }
  // The whole letterboxed input, padding included, is the whole image after clipping.
  const InputGeometry g = *GeometryFor(ResizeMode::kLetterbox, 640, 480, Spec224());
  const PixelBox whole = BoxToOriginal(PixelBox{-5, 0, 224, 224}, g);
  EXPECT_FLOAT_EQ(whole.x1, 0);
  EXPECT_FLOAT_EQ(whole.y1, 0);
  EXPECT_FLOAT_EQ(whole.x2, 640);
  EXPECT_FLOAT_EQ(whole.y2, 480);
}

TEST(PreprocessWholeTest, StretchAndLetterbox) {
  // Left half red, right half blue.
  RgbImage image{cv::Mat(480, 640, CV_8UC3, cv::Scalar(0, 0, 255))};
  image.pixels(cv::Rect(0, 0, 320, 480)).setTo(cv::Scalar(255, 0, 0));
  const PreprocessSpec spec = Spec224();
  const float red_r = (1.0f - spec.mean[0]) / spec.std[0];
  const float blue_r = (0.0f - spec.mean[0]) / spec.std[0];

  absl::StatusOr<at::Tensor> stretched = PreprocessWhole(image, ResizeMode::kStretch, spec);
  ASSERT_TRUE(stretched.ok()) << stretched.status();
  ASSERT_EQ(stretched->sizes(), (std::vector<int64_t>{3, 224, 224}));
  EXPECT_NEAR((*stretched)[0][100][50].item<float>(), red_r, 1e-5);
  EXPECT_NEAR((*stretched)[0][100][170].item<float>(), blue_r, 1e-5);
  EXPECT_NEAR((*stretched)[0][0][111].item<float>(), red_r, 1e-5);  // The split stays mid-way.
  EXPECT_NEAR((*stretched)[0][0][112].item<float>(), blue_r, 1e-5);

  absl::StatusOr<at::Tensor> boxed = PreprocessWhole(image, ResizeMode::kLetterbox, spec);
  ASSERT_TRUE(boxed.ok());
  // Bands of 28 rows above and below: the mean colour, 0 after normalisation.
  EXPECT_EQ(boxed->narrow(1, 0, 28).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(boxed->narrow(1, 196, 28).abs().max().item<float>(), 0.0f);
  EXPECT_NEAR((*boxed)[0][28][10].item<float>(), red_r, 1e-5);
  EXPECT_NEAR((*boxed)[0][195][200].item<float>(), blue_r, 1e-5);

  EXPECT_FALSE(PreprocessWhole(image, ResizeMode::kCenterCrop, spec).ok());
  EXPECT_FALSE(PreprocessWhole(RgbImage{}, ResizeMode::kStretch, spec).ok());
}

// Scores over the input where class 1 wins left of input column `split` and class 2 right of
// it (class 0 never), at a quarter of the input's resolution.
at::Tensor SplitScores(double split, int64_t classes = 3) {
  at::Tensor scores = at::zeros({classes, 56, 56});
  for (int64_t x = 0; x < 56; ++x) {
    const double centre = (x + 0.5) * 4;  // Input column of this score column.
    scores[centre < split ? 1 : 2].select(1, x).fill_(5.0);
  }
  return scores;
}

// First original column labelled 2 on row `y`.
int FirstOf(const cv::Mat& labels, int value, int y) {
  for (int x = 0; x < labels.cols; ++x) {
    if (labels.at<uint16_t>(y, x) == value) return x;
  }
  return -1;
}

TEST(LabelMapToOriginalTest, BoundariesLandWhereTheGeometrySays) {
  // Stretch: input column 112 is original column 320.
  InputGeometry g = *GeometryFor(ResizeMode::kStretch, 640, 480, Spec224());
  absl::StatusOr<cv::Mat> labels = LabelMapToOriginal(SplitScores(112), g);
  ASSERT_TRUE(labels.ok()) << labels.status();
  ASSERT_EQ(labels->size(), cv::Size(640, 480));
  ASSERT_EQ(labels->type(), CV_16UC1);
  EXPECT_NEAR(FirstOf(*labels, 2, 0), 320, 2);
  EXPECT_NEAR(FirstOf(*labels, 2, 479), 320, 2);
  EXPECT_EQ(labels->at<uint16_t>(200, 10), 1);

  // Letterbox of a portrait image: content in input columns 56..168, so the split at 112 is the
  // middle of the image.
  g = *GeometryFor(ResizeMode::kLetterbox, 300, 600, Spec224());
  labels = LabelMapToOriginal(SplitScores(112), g);
  ASSERT_TRUE(labels.ok());
  EXPECT_NEAR(FirstOf(*labels, 2, 300), 150, 2);

  // Centre crop: the cut-off borders get outside_class.
  g = *GeometryFor(ResizeMode::kCenterCrop, 640, 480, Spec224());
  labels = LabelMapToOriginal(SplitScores(112), g, /*outside_class=*/255);
  ASSERT_TRUE(labels.ok());
  EXPECT_EQ(labels->at<uint16_t>(240, 5), 255);
  EXPECT_EQ(labels->at<uint16_t>(240, 634), 255);
  EXPECT_EQ(labels->at<uint16_t>(240, 200), 1);
  EXPECT_EQ(labels->at<uint16_t>(240, 440), 2);
}

TEST(LabelMapToOriginalTest, TiesGoToTheLowerClassAndLargeMapsWorkInBlocks) {
  const InputGeometry small = *GeometryFor(ResizeMode::kStretch, 10, 10, Spec224());
  absl::StatusOr<cv::Mat> tie = LabelMapToOriginal(at::ones({4, 8, 8}), small);
  ASSERT_TRUE(tie.ok());
  EXPECT_EQ(cv::countNonZero(*tie), 0);
  // 40 classes x 1000 x 1000 pixels: several blocks of rows; the split stays put in all.
  const InputGeometry big = *GeometryFor(ResizeMode::kStretch, 1000, 1000, Spec224());
  absl::StatusOr<cv::Mat> labels = LabelMapToOriginal(SplitScores(112, 40), big);
  ASSERT_TRUE(labels.ok());
  for (int y : {0, 333, 500, 999}) EXPECT_NEAR(FirstOf(*labels, 2, y), 500, 3) << y;
  EXPECT_FALSE(LabelMapToOriginal(at::zeros({3, 8}), big).ok());
  EXPECT_FALSE(LabelMapToOriginal(at::zeros({3, 8, 8}, at::kLong), big).ok());
}

TEST(LabelMapToOriginalCudaTest, ScoresOnTheGpuGiveTheCpusMap) {
  if (!at::globalContext().hasCUDA()) GTEST_SKIP() << "no CUDA device";
  at::manual_seed(2);
  const at::Tensor scores = at::randn({6, 28, 28});
  for (ResizeMode mode : {ResizeMode::kCenterCrop, ResizeMode::kStretch, ResizeMode::kLetterbox}) {
    const InputGeometry g = *GeometryFor(mode, 333, 250, Spec224());
    absl::StatusOr<cv::Mat> cpu = LabelMapToOriginal(scores, g, 9);
    absl::StatusOr<cv::Mat> cuda = LabelMapToOriginal(scores.to(at::kCUDA).to(at::kHalf), g, 9);
    ASSERT_TRUE(cpu.ok() && cuda.ok());
    // Half-precision scores may flip a pixel where two classes nearly tie.
    cv::Mat differ;
    cv::compare(*cpu, *cuda, differ, cv::CMP_NE);
    EXPECT_LT(cv::countNonZero(differ), cpu->total() / 200) << static_cast<int>(mode);
  }
}

TEST(EncodeLabelMapTest, PngIs8BitWhenItFitsAndRawIsLittleEndian) {
  cv::Mat labels(3, 4, CV_16UC1, cv::Scalar(7));
  labels.at<uint16_t>(1, 2) = 200;
  absl::StatusOr<std::string> png = EncodeLabelMap(labels, LabelMapFormat::kPng);
  ASSERT_TRUE(png.ok());
  cv::Mat decoded = cv::imdecode(std::vector<uchar>(png->begin(), png->end()), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(decoded.type(), CV_8UC1);
  cv::Mat narrow;
  labels.convertTo(narrow, CV_8UC1);
  EXPECT_EQ(cv::norm(decoded, narrow, cv::NORM_INF), 0);

  labels.at<uint16_t>(2, 3) = 1000;
  png = EncodeLabelMap(labels, LabelMapFormat::kPng);
  ASSERT_TRUE(png.ok());
  decoded = cv::imdecode(std::vector<uchar>(png->begin(), png->end()), cv::IMREAD_UNCHANGED);
  ASSERT_EQ(decoded.type(), CV_16UC1);
  EXPECT_EQ(cv::norm(decoded, labels, cv::NORM_INF), 0);

  absl::StatusOr<std::string> raw = EncodeLabelMap(labels, LabelMapFormat::kRaw);
  ASSERT_TRUE(raw.ok());
  ASSERT_EQ(raw->size(), 3u * 4u * 2u);
  const auto byte = [&raw](size_t i) { return static_cast<uint8_t>((*raw)[i]); };
  EXPECT_EQ(byte(0), 7);
  EXPECT_EQ(byte(1), 0);
  const size_t last = (2 * 4 + 3) * 2;  // 1000 = 0x03e8
  EXPECT_EQ(byte(last), 0xe8);
  EXPECT_EQ(byte(last + 1), 0x03);

  EXPECT_FALSE(EncodeLabelMap(cv::Mat(), LabelMapFormat::kPng).ok());
  EXPECT_FALSE(EncodeLabelMap(cv::Mat(2, 2, CV_32FC1), LabelMapFormat::kRaw).ok());
}

}  // namespace
}  // namespace vitserve
