// TensorPreprocessor and ResizeCropMatrix against the CPU path (Preprocess, i.e. cv::resize):
// the tensor ops run here on CPU tensors, exactly the ops a CUDA instance runs on the GPU.
#include "server/image/tensor_preprocess.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/image/image.h"
#include "server/image/preprocess.h"
#include "server/image/resize_weights.h"

namespace vitserve {
namespace {

// Photo-like content: smooth gradients, hard-edged shapes and mild noise, so that both the
// smooth response and the overshoot at edges (which an 8-bit resize saturates) are exercised.
cv::Mat PhotoLike(int width, int height, int seed) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>((x * 255) / std::max(1, width - 1)),
                                            static_cast<uint8_t>((y * 200) / std::max(1, height - 1)),
                                            static_cast<uint8_t>(((x + y + seed) * 7) % 256));
    }
  }
  cv::RNG rng(seed);
  for (int i = 0; i < 6; ++i) {
    const cv::Point centre(rng.uniform(0, width), rng.uniform(0, height));
    const int radius = rng.uniform(1, std::max(2, std::min(width, height) / 3));
    cv::circle(image, centre, radius,
               cv::Scalar(rng.uniform(0, 256), rng.uniform(0, 256), rng.uniform(0, 256)),
               cv::FILLED);
  }
  cv::Mat noise(height, width, CV_8UC3);
  rng.fill(noise, cv::RNG::UNIFORM, 0, 12);
  cv::add(image, noise, image);
  return image;
}

// The crop of cv::resize(image) as the matrices compute it, rounded to 8 bits as TensorPreprocessor
// does.
cv::Mat MatrixResize(const cv::Mat& image, const CropGeometry& g, int size, ResizeFilter filter) {
  const std::vector<float> wx =
      ResizeCropMatrix(image.cols, g.resized_width, g.crop_x, size, filter);
  const std::vector<float> wy =
      ResizeCropMatrix(image.rows, g.resized_height, g.crop_y, size, filter);
  cv::Mat out(size, size, CV_32FC3);
  for (int v = 0; v < size; ++v) {
    for (int u = 0; u < size; ++u) {
      cv::Vec3f sum(0, 0, 0);
      for (int y = 0; y < image.rows; ++y) {
        const float a = wy[static_cast<size_t>(v) * image.rows + y];
        if (a == 0.0f) continue;
        for (int x = 0; x < image.cols; ++x) {
          const float b = wx[static_cast<size_t>(u) * image.cols + x];
          if (b == 0.0f) continue;
          const cv::Vec3b p = image.at<cv::Vec3b>(y, x);
          for (int c = 0; c < 3; ++c) sum[c] += a * b * p[c];
        }
      }
      for (int c = 0; c < 3; ++c) sum[c] = std::floor(std::clamp(sum[c], 0.0f, 255.0f) + 0.5f);
      out.at<cv::Vec3f>(v, u) = sum;
    }
  }
  return out;
}

struct SizeCase {
  int width, height;
  Interpolation interpolation;
};

class ResizeCropMatrixTest : public testing::TestWithParam<SizeCase> {};

// Each filter's matrices give what cv::resize gives: for area and cubic resizing the same pixels
// but a rare one where OpenCV's arithmetic rounds the other way; for bilinear, whose 8-bit SIMD
// path truncates intermediate sums, within one grey level.
TEST_P(ResizeCropMatrixTest, MatchesOpenCvResizeAndCrop) {
  const SizeCase& c = GetParam();
  PreprocessSpec spec;
  spec.interpolation = c.interpolation;
  const cv::Mat image = PhotoLike(c.width, c.height, c.width * 31 + c.height);
  const CropGeometry g = ComputeCropGeometry(c.width, c.height, spec);
  const ResizeFilter filter = ResizeFilterFor(g, spec);
  const int method = filter == ResizeFilter::kArea    ? cv::INTER_AREA
                     : filter == ResizeFilter::kCubic ? cv::INTER_CUBIC
                                                      : cv::INTER_LINEAR;
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(g.resized_width, g.resized_height), 0, 0, method);
  cv::Mat expected;
  resized(cv::Rect(g.crop_x, g.crop_y, 224, 224)).convertTo(expected, CV_32FC3);
  const cv::Mat actual = MatrixResize(image, g, 224, filter);
  cv::Mat difference;
  cv::absdiff(actual, expected, difference);
  double max_difference = 0;
  cv::minMaxLoc(difference.reshape(1), nullptr, &max_difference);
  EXPECT_LE(max_difference, 1.0) << "mean " << cv::mean(difference);
  const double differing = cv::countNonZero(difference.reshape(1) > 0.5) /
                           static_cast<double>(difference.total() * 3);
  EXPECT_LT(differing, filter == ResizeFilter::kLinear ? 0.3 : 0.005);
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, ResizeCropMatrixTest,
    testing::Values(SizeCase{224, 224, Interpolation::kBicubic},  // Enlarged to 256: cubic.
                    SizeCase{224, 224, Interpolation::kBilinear},
                    SizeCase{200, 300, Interpolation::kBicubic},  // Portrait, enlarged.
                    SizeCase{640, 480, Interpolation::kBicubic},  // Shrunk: area, scale 1.875.
                    SizeCase{512, 512, Interpolation::kBicubic},  // Shrunk by exactly 2.
                    SizeCase{300, 257, Interpolation::kBilinear},  // Barely shrunk.
                    SizeCase{256, 256, Interpolation::kBicubic},  // No resize: a plain crop.
                    SizeCase{7, 5, Interpolation::kBicubic}));    // Tiny: edges everywhere.

TEST(ResizeCropMatrixTest, EveryRowSumsToOne) {
  for (ResizeFilter filter : {ResizeFilter::kArea, ResizeFilter::kCubic, ResizeFilter::kLinear}) {
    const int64_t source = filter == ResizeFilter::kArea ? 481 : 97;
    const int64_t resized = filter == ResizeFilter::kArea ? 256 : 256;
    const std::vector<float> w = ResizeCropMatrix(source, resized, 16, 224, filter);
    ASSERT_EQ(w.size(), static_cast<size_t>(224 * source));
    for (int64_t u = 0; u < 224; ++u) {
      double sum = 0;
      for (int64_t i = 0; i < source; ++i) sum += w[static_cast<size_t>(u * source + i)];
      // Interpolation coefficients are multiples of 1/2048, as OpenCV's are.
      EXPECT_NEAR(sum, 1.0, filter == ResizeFilter::kArea ? 1e-5 : 2.0 / 2048)
          << "filter " << static_cast<int>(filter) << " row " << u;
    }
  }
}

// The whole device path (widen, two matrix products, clamp, normalise, write rows of another
// dtype) against Preprocess on the same pixels: within one grey level after normalisation.
TEST(TensorPreprocessorTest, MatchesPreprocessWithinOneGreyLevel) {
  PreprocessSpec spec;
  TensorPreprocessor preprocessor(spec);
  for (const auto& [width, height] : std::vector<std::pair<int, int>>{{224, 224}, {640, 480}, {300, 500}}) {
    SCOPED_TRACE(testing::Message() << width << "x" << height);
    std::vector<cv::Mat> images = {PhotoLike(width, height, 1), PhotoLike(width, height, 2)};
    at::Tensor batch = at::empty({2, height, width, 3}, at::kByte);
    at::Tensor expected = at::empty({2, 3, 224, 224}, at::kFloat);
    for (int i = 0; i < 2; ++i) {
      std::memcpy(batch[i].data_ptr(), images[i].data, images[i].total() * 3);
      absl::StatusOr<PreprocessedImage> cpu = Preprocess(RgbImage{images[i]}, spec);
      ASSERT_TRUE(cpu.ok()) << cpu.status();
      expected[i].copy_(cpu->tensor);
    }
    // Rows 1..2 of a larger half-precision input, as in a CUDA graph's static input.
    at::Tensor input = at::full({4, 3, 224, 224}, 99.0, at::kHalf);
    preprocessor.Run(batch, input.narrow(0, 1, 2));
    const at::Tensor actual = input.narrow(0, 1, 2).to(at::kFloat);
    const double grey_level = 1.0 / (255.0 * 0.224);  // The widest std of the spec is 0.229.
    EXPECT_LE((actual - expected).abs().max().item<double>(), 1.05 * grey_level + 0.01);
    EXPECT_LT((actual - expected).abs().mean().item<double>(), 0.3 * grey_level);
    EXPECT_EQ(input[0].eq(99.0).all().item<bool>(), true);  // Other rows untouched.
    EXPECT_EQ(input[3].eq(99.0).all().item<bool>(), true);
  }
}

// On a CUDA device the preprocessor runs one fused kernel (internal/preprocess_kernel.h) in
// place of the tensor ops: the same arithmetic in another summation order, so a value that lands
// within float rounding of a half grey level may round the other way. Compared with the tensor
// ops on the CPU: at most one grey level apart, and almost every value identical; float16 and
// channels-last output (a CUDA graph's static input) included.
TEST(TensorPreprocessorCudaTest, FusedKernelMatchesTheTensorOps) {
  if (!at::globalContext().hasCUDA()) GTEST_SKIP() << "no CUDA device";
  PreprocessSpec spec;
  TensorPreprocessor on_cpu(spec);
  TensorPreprocessor on_gpu(spec);
  const double grey_level = 1.0 / (255.0 * 0.224);
  for (const auto& [width, height] :
       std::vector<std::pair<int, int>>{{224, 224}, {640, 480}, {300, 500}, {120, 90}, {448, 260}}) {
    SCOPED_TRACE(testing::Message() << width << "x" << height);
    at::Tensor batch = at::empty({3, height, width, 3}, at::kByte);
    for (int i = 0; i < 3; ++i) {
      const cv::Mat image = PhotoLike(width, height, 10 + i);
      std::memcpy(batch[i].data_ptr(), image.data, image.total() * 3);
    }
    at::Tensor expected = at::empty({3, 3, 224, 224}, at::kFloat);
    on_cpu.Run(batch, expected);
    const at::Tensor on_device = batch.to(at::kCUDA);
    at::Tensor fp32 = at::full({3, 3, 224, 224}, 99.0, at::TensorOptions().device(at::kCUDA));
    on_gpu.Run(on_device, fp32);
    const at::Tensor difference = (fp32.cpu() - expected).abs();
    EXPECT_LE(difference.max().item<double>(), 1.01 * grey_level);
    EXPECT_LT(difference.gt(1e-4).to(at::kFloat).mean().item<double>(), 1e-3);
    // Rows 1..3 of a channels-last float16 input, as a CUDA graph's static input.
    at::Tensor half = at::full({5, 3, 224, 224}, 99.0,
                               at::TensorOptions().device(at::kCUDA).dtype(at::kHalf))
                          .contiguous(at::MemoryFormat::ChannelsLast);
    on_gpu.Run(on_device, half.narrow(0, 1, 3));
    const at::Tensor half_rows = half.narrow(0, 1, 3).to(at::kFloat).cpu();
    EXPECT_LE((half_rows - expected).abs().max().item<double>(), 1.01 * grey_level + 0.01);
    EXPECT_TRUE(half[0].eq(99.0).all().item<bool>());  // Other rows untouched.
    EXPECT_TRUE(half[4].eq(99.0).all().item<bool>());
  }
}

TEST(TensorPreprocessorTest, RejectsWrongShapes) {
  TensorPreprocessor preprocessor{PreprocessSpec()};
  at::Tensor out = at::empty({1, 3, 224, 224});
  EXPECT_THROW(preprocessor.Run(at::zeros({1, 10, 10, 4}, at::kByte), out), c10::Error);
  EXPECT_THROW(preprocessor.Run(at::zeros({1, 10, 10, 3}, at::kFloat), out), c10::Error);
  EXPECT_THROW(preprocessor.Run(at::zeros({2, 10, 10, 3}, at::kByte), out), c10::Error);
}

}  // namespace
}  // namespace vitserve
