#include "server/image/dense_output.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace vitserve {
namespace {

// Scores sampled per block of original rows: at most this many elements ([C, rows, W]) at a
// time, so a large photo with many classes does not need gigabytes at once.
constexpr int64_t kSampleBlockElements = int64_t{1} << 24;

}  // namespace

absl::StatusOr<InputGeometry> GeometryFor(ResizeMode mode, int width, int height,
                                          const PreprocessSpec& spec) {
  if (width < 1 || height < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("image size must be positive, got ", width, "x", height));
  }
  VITSERVE_RETURN_IF_ERROR(ValidatePreprocessSpec(spec));
  const int s = static_cast<int>(spec.input_size);
  InputGeometry g;
  g.original_width = width;
  g.original_height = height;
  g.input_size = s;
  g.content = cv::Rect(0, 0, s, s);
  switch (mode) {
    case ResizeMode::kCenterCrop: {
      const CropGeometry crop = ComputeCropGeometry(width, height, spec);
      g.scale_x = static_cast<double>(crop.resized_width) / width;
      g.scale_y = static_cast<double>(crop.resized_height) / height;
      g.offset_x = -crop.crop_x;
      g.offset_y = -crop.crop_y;
      break;
    }
    case ResizeMode::kStretch:
      g.scale_x = static_cast<double>(s) / width;
      g.scale_y = static_cast<double>(s) / height;
      break;
    case ResizeMode::kLetterbox: {
      const double fit = std::min(static_cast<double>(s) / width, static_cast<double>(s) / height);
      const int content_width = std::clamp(static_cast<int>(std::lround(width * fit)), 1, s);
      const int content_height = std::clamp(static_cast<int>(std::lround(height * fit)), 1, s);
      g.content = cv::Rect((s - content_width) / 2, (s - content_height) / 2, content_width,
                           content_height);
      g.scale_x = static_cast<double>(content_width) / width;
      g.scale_y = static_cast<double>(content_height) / height;
      g.offset_x = g.content.x;
      g.offset_y = g.content.y;
      break;
    }
  }
  return g;
}

absl::StatusOr<at::Tensor> PreprocessWhole(const RgbImage& image, ResizeMode mode,
                                           const PreprocessSpec& spec) {
  if (mode == ResizeMode::kCenterCrop) {
    return absl::InvalidArgumentError("PreprocessWhole: the centre crop is Preprocess's");
  }
  if (image.pixels.empty() || image.pixels.type() != CV_8UC3) {
    return absl::InvalidArgumentError("PreprocessWhole: the image must be a non-empty RGB image");
  }
  VITSERVE_ASSIGN_OR_RETURN(const InputGeometry g,
                            GeometryFor(mode, image.width(), image.height(), spec));
  const cv::Size target = g.content.size();
  const bool shrinking = target.width < image.width() && target.height < image.height();
  const int interpolation = shrinking ? cv::INTER_AREA
                            : spec.interpolation == Interpolation::kBicubic ? cv::INTER_CUBIC
                                                                            : cv::INTER_LINEAR;
  cv::Mat resized;
  try {
    cv::resize(image.pixels, resized, target, 0, 0, interpolation);
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("PreprocessWhole: resize failed: ", e.what()));
  }
  const int64_t s = spec.input_size;
  // Zeros: the mean colour after normalisation, which is what the padding is.
  at::Tensor input = at::zeros({3, s, s}, at::kFloat);
  float* planes = input.data_ptr<float>();
  for (int c = 0; c < 3; ++c) {
    const float scale = 1.0f / (255.0f * spec.std[c]);
    const float offset = -spec.mean[c] / spec.std[c];
    for (int y = 0; y < target.height; ++y) {
      const uint8_t* row = resized.ptr<uint8_t>(y);
      float* out = planes + (c * s + g.content.y + y) * s + g.content.x;
      for (int x = 0; x < target.width; ++x) out[x] = row[3 * x + c] * scale + offset;
    }
  }
  return input;
}

PixelBox BoxToOriginal(const PixelBox& input_box, const InputGeometry& g) {
  auto x = [&g](float u) {
    return static_cast<float>(std::clamp((u - g.offset_x) / g.scale_x, 0.0,
                                         static_cast<double>(g.original_width)));
  };
  auto y = [&g](float v) {
    return static_cast<float>(std::clamp((v - g.offset_y) / g.scale_y, 0.0,
                                         static_cast<double>(g.original_height)));
  };
  return PixelBox{x(input_box.x1), y(input_box.y1), x(input_box.x2), y(input_box.y2)};
}

absl::StatusOr<cv::Mat> LabelMapToOriginal(const at::Tensor& scores, const InputGeometry& g,
                                           int outside_class) {
  if (!scores.defined() || scores.dim() != 3 || scores.size(0) < 1 || scores.size(1) < 1 ||
      scores.size(2) < 1 || !at::isFloatingType(scores.scalar_type())) {
    return absl::InvalidArgumentError("LabelMapToOriginal: scores must be a floating [C,h,w] tensor");
  }
  if (scores.size(0) > 65536 || outside_class < 0 || outside_class > 65535) {
    return absl::InvalidArgumentError(
        "LabelMapToOriginal: at most 65536 classes, and outside_class within 0..65535");
  }
  if (g.original_width < 1 || g.original_height < 1 || g.input_size < 1) {
    return absl::InvalidArgumentError("LabelMapToOriginal: empty geometry");
  }
  const at::TensorOptions on_device = at::TensorOptions().device(scores.device()).dtype(at::kFloat);
  const at::Tensor input = scores.to(at::kFloat).unsqueeze(0);  // [1, C, h, w]
  const double s = g.input_size;
  // Each original pixel centre's input position, in grid_sample's [-1, 1] (input edges).
  const at::Tensor u = (at::arange(g.original_width, on_device) + 0.5) * g.scale_x + g.offset_x;
  const at::Tensor grid_x = u / s * 2 - 1;
  const at::Tensor x_outside = (u < 0) | (u > s);
  const int64_t classes = scores.size(0);
  const int64_t block_rows =
      std::max<int64_t>(1, kSampleBlockElements / (classes * g.original_width));
  cv::Mat labels(g.original_height, g.original_width, CV_16UC1);
  for (int64_t row0 = 0; row0 < g.original_height; row0 += block_rows) {
    const int64_t rows = std::min<int64_t>(block_rows, g.original_height - row0);
    const at::Tensor v =
        (at::arange(row0, row0 + rows, on_device) + 0.5) * g.scale_y + g.offset_y;
    const at::Tensor grid_y = v / s * 2 - 1;
    const at::Tensor grid =
        at::stack({grid_x.unsqueeze(0).expand({rows, g.original_width}),
                   grid_y.unsqueeze(1).expand({rows, g.original_width})},
                  -1)
            .unsqueeze(0);  // [1, rows, W, 2] as (x, y)
    // Bilinear, edge values beyond the outermost sample centres.
    const at::Tensor sampled = at::grid_sampler(input, grid, /*interpolation_mode=*/0,
                                                /*padding_mode=*/1, /*align_corners=*/false);
    at::Tensor best = sampled.argmax(1).squeeze(0);  // [rows, W]; ties: the lower class.
    const at::Tensor outside = x_outside.unsqueeze(0) | ((v < 0) | (v > s)).unsqueeze(1);
    best = best.masked_fill(outside, outside_class).to(at::kCPU, at::kInt).contiguous();
    const int32_t* values = best.data_ptr<int32_t>();
    for (int64_t r = 0; r < rows; ++r) {
      uint16_t* out = labels.ptr<uint16_t>(static_cast<int>(row0 + r));
      for (int x = 0; x < g.original_width; ++x) {
        out[x] = static_cast<uint16_t>(values[r * g.original_width + x]);
      }
    }
  }
  return labels;
}

absl::StatusOr<std::string> EncodeLabelMap(const cv::Mat& labels, LabelMapFormat format) {
  if (labels.empty() || (labels.type() != CV_16UC1 && labels.type() != CV_8UC1)) {
    return absl::InvalidArgumentError("EncodeLabelMap: labels must be a non-empty CV_16UC1 or CV_8UC1 map");
  }
  cv::Mat wide;
  labels.convertTo(wide, CV_16UC1);
  if (format == LabelMapFormat::kRaw) {
    std::string bytes;
    bytes.reserve(static_cast<size_t>(wide.total()) * 2);
    for (int y = 0; y < wide.rows; ++y) {
      const uint16_t* row = wide.ptr<uint16_t>(y);
      for (int x = 0; x < wide.cols; ++x) {
        bytes.push_back(static_cast<char>(row[x] & 0xff));  // Little-endian on every host.
        bytes.push_back(static_cast<char>(row[x] >> 8));
      }
    }
    return bytes;
  }
  double max_class = 0;
  cv::minMaxLoc(wide, nullptr, &max_class);
  cv::Mat png_pixels = wide;
  if (max_class < 256) wide.convertTo(png_pixels, CV_8UC1);
  std::vector<uchar> encoded;
  try {
    if (!cv::imencode(".png", png_pixels, encoded)) {
      return absl::InternalError("EncodeLabelMap: PNG encoding failed");
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("EncodeLabelMap: PNG encoding failed: ", e.what()));
  }
  return std::string(encoded.begin(), encoded.end());
}

}  // namespace vitserve
