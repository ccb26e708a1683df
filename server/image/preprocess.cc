#include "server/image/preprocess.h"

#include <ATen/ATen.h>

#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace vitserve {
namespace {

// Python's round() on x.5 values: half to even (std::nearbyint in the default rounding mode).
int RoundHalfEven(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

absl::Status ValidatePreprocessSpec(const PreprocessSpec& spec) {
  if (spec.input_size < 1 || spec.input_size > 8192) {
    return absl::InvalidArgumentError(
        absl::StrCat("input_size must be in [1, 8192], got ", spec.input_size));
  }
  if (!(spec.crop_pct > 0.0 && spec.crop_pct <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("crop_pct must be in (0, 1], got ", spec.crop_pct));
  }
  for (float s : spec.std) {
    if (!(s > 0.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("std entries must be positive, got ", s));
    }
  }
  return absl::OkStatus();
}

int64_t ResizedShortSide(const PreprocessSpec& spec) {
  return static_cast<int64_t>(std::floor(static_cast<double>(spec.input_size) / spec.crop_pct));
}

CropGeometry ComputeCropGeometry(int width, int height, const PreprocessSpec& spec) {
  const int size = static_cast<int>(spec.input_size);
  const int64_t target_short = ResizedShortSide(spec);
  const bool landscape = width >= height;
  const int64_t short_side = landscape ? height : width;
  const int64_t long_side = landscape ? width : height;
  const int64_t target_long = target_short * long_side / short_side;  // int() truncation.
  CropGeometry g;
  g.original_width = width;
  g.original_height = height;
  g.scale = static_cast<double>(target_short) / static_cast<double>(short_side);
  g.resized_width = static_cast<int>(landscape ? target_long : target_short);
  g.resized_height = static_cast<int>(landscape ? target_short : target_long);
  g.crop_x = RoundHalfEven((g.resized_width - size) / 2.0);
  g.crop_y = RoundHalfEven((g.resized_height - size) / 2.0);
  return g;
}

ResizeFilter ResizeFilterFor(const CropGeometry& geometry, const PreprocessSpec& spec) {
  if (geometry.scale < 1.0) return ResizeFilter::kArea;  // Shrinking: see the file comment.
  return spec.interpolation == Interpolation::kBicubic ? ResizeFilter::kCubic
                                                       : ResizeFilter::kLinear;
}

absl::StatusOr<PreprocessedImage> Preprocess(const RgbImage& image, const PreprocessSpec& spec) {
  VITSERVE_RETURN_IF_ERROR(ValidatePreprocessSpec(spec));
  PreprocessedImage out;
  out.tensor = at::empty({3, spec.input_size, spec.input_size}, at::kFloat);
  VITSERVE_ASSIGN_OR_RETURN(out.geometry, PreprocessInto(image, spec, out.tensor.data_ptr<float>()));
  return out;
}

absl::StatusOr<CropGeometry> PreprocessInto(const RgbImage& image, const PreprocessSpec& spec,
                                            float* chw) {
  VITSERVE_RETURN_IF_ERROR(ValidatePreprocessSpec(spec));
  if (image.pixels.empty() || image.pixels.type() != CV_8UC3) {
    return absl::InvalidArgumentError("Preprocess needs a non-empty 8-bit RGB image");
  }
  const int size = static_cast<int>(spec.input_size);
  const CropGeometry g = ComputeCropGeometry(image.width(), image.height(), spec);
  const int resized_width = g.resized_width;
  const int resized_height = g.resized_height;

  cv::Mat crop;
  try {
    cv::Mat resized;
    if (resized_width == image.width() && resized_height == image.height()) {
      resized = image.pixels;
    } else {
      const ResizeFilter filter = ResizeFilterFor(g, spec);
      const int method = filter == ResizeFilter::kArea    ? cv::INTER_AREA
                         : filter == ResizeFilter::kCubic ? cv::INTER_CUBIC
                                                          : cv::INTER_LINEAR;
      cv::resize(image.pixels, resized, cv::Size(resized_width, resized_height), 0, 0, method);
    }
    crop = resized(cv::Rect(g.crop_x, g.crop_y, size, size));
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("image resize failed: ", e.what()));
  }

  // ToTensor + Normalize through a per-channel table: exactly (v / 255 - mean) / std in float,
  // written straight from interleaved HWC bytes into planar CHW.
  float table[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) {
      table[c][v] = (static_cast<float>(v) / 255.0f - spec.mean[c]) / spec.std[c];
    }
  }
  float* planes = chw;
  const int64_t plane = int64_t{size} * size;
  for (int y = 0; y < size; ++y) {
    const uint8_t* row = crop.ptr<uint8_t>(y);
    float* r = planes + int64_t{y} * size;
    float* gch = r + plane;
    float* b = gch + plane;
    for (int x = 0; x < size; ++x) {
      r[x] = table[0][row[3 * x]];
      gch[x] = table[1][row[3 * x + 1]];
      b[x] = table[2][row[3 * x + 2]];
    }
  }
  return g;
}

}  // namespace vitserve
