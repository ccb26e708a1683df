// Mapping model outputs of detection and segmentation back to the original image: the geometry
// of each way a model input can be made (timm's centre crop, a stretch to the square input, a
// letterbox), the input for the last two, box coordinates in original pixels, and the label map
// at the original resolution with its wire encodings (SegmentRequest.MaskFormat).
//
// Coordinates are continuous, pixel edges at integers (pixel (i, j) covers [i, i+1) x [j, j+1));
// an InputGeometry says where original point (x, y) lands in the input:
//   u = x * scale_x + offset_x,   v = y * scale_y + offset_y.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT for empty images, bad sizes or
// tensors of the wrong shape.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"
#include "server/image/image.h"
#include "server/image/preprocess.h"

namespace vitserve {

enum class ResizeMode {
  kCenterCrop,  // timm's evaluation transform (Preprocess): the borders are cut off.
  kStretch,     // The whole image resized to S x S, aspect ratio not kept.
  kLetterbox,   // The whole image fitted into S x S, aspect kept, the rest padded.
};

// How detection and segmentation models see an image: Detect and Segment feed them so, and
// vitserve-train must too.
inline constexpr ResizeMode kDenseResizeMode = ResizeMode::kStretch;

struct InputGeometry {
  int original_width = 0;
  int original_height = 0;
  int input_size = 0;
  double scale_x = 1.0;
  double scale_y = 1.0;
  double offset_x = 0.0;
  double offset_y = 0.0;
  // The input rectangle that holds image content (all of it but the letterbox padding, which
  // is left and right or above and below).
  cv::Rect content;
};

absl::StatusOr<InputGeometry> GeometryFor(ResizeMode mode, int width, int height,
                                          const PreprocessSpec& spec);

// The [3, S, S] float32 input for kStretch or kLetterbox (kCenterCrop is Preprocess): resized
// with INTER_AREA when shrinking, else the spec's interpolation; normalised with the spec's mean
// and std; letterbox padding is the mean colour (0 after normalisation).
absl::StatusOr<at::Tensor> PreprocessWhole(const RgbImage& image, ResizeMode mode,
                                           const PreprocessSpec& spec);

struct PixelBox {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
};

// A box in input coordinates, in original pixels, clipped to the image.
PixelBox BoxToOriginal(const PixelBox& input_box, const InputGeometry& geometry);

// The class of every original pixel from per-class scores over the input ([C, h, w], any
// device, any floating dtype; h, w any size, covering the S x S input): scores sampled
// bilinearly at each pixel centre's input position, then the best class (ties: lower index).
// Pixels that land outside the input (cut off by a centre crop) get `outside_class`.
// CV_16UC1 [original_height, original_width].
absl::StatusOr<cv::Mat> LabelMapToOriginal(const at::Tensor& scores, const InputGeometry& geometry,
                                           int outside_class = 0);

// The wire forms of a label map (CV_16UC1 or CV_8UC1): a single-channel PNG, 8-bit when every
// class is below 256, else 16-bit; or RAW, little-endian uint16 per pixel, row-major.
enum class LabelMapFormat { kPng, kRaw };
absl::StatusOr<std::string> EncodeLabelMap(const cv::Mat& labels, LabelMapFormat format);

}  // namespace vitserve
