// Preprocess: RgbImage -> normalised [3, S, S] float32 model input, with timm's evaluation
// transform (Resize(floor(S / crop_pct)) on the shorter side, CenterCrop(S), ToTensor,
// Normalize(mean, std)) and the geometry needed to map model-input pixels back to the original.
//
// Resizing: the shorter side becomes floor(input_size / crop_pct) and the longer side
// int(new_short * long / short), as torchvision computes it; the crop offsets are
// round((resized - S) / 2) with Python's round-half-to-even, as CenterCrop does. When shrinking,
// cv::INTER_AREA is used whatever `interpolation` says: PIL (which timm's transforms use)
// filters with an antialiasing kernel when downscaling, and INTER_AREA is OpenCV's closest
// equivalent, while OpenCV's bicubic/bilinear would alias. When enlarging, `interpolation` picks
// cv::INTER_CUBIC or cv::INTER_LINEAR. Results are close to, not bit-identical with, PIL's:
// against timm 1.0's create_transform on the bundled samples and a 1600x1200 photo-like image,
// the geometry is identical and the mean absolute difference is under one 8-bit grey level (max
// a few levels at hard edges, from OpenCV's vs PIL's bicubic kernel and JPEG decoder).
//
// Thread-safety: a pure function. OpenCV may use its own thread pool inside resize.
// Errors: INVALID_ARGUMENT for an empty / non-CV_8UC3 image or a bad spec (input_size outside
// [1, 8192], crop_pct outside (0, 1], a non-positive std); INTERNAL if OpenCV throws.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/image/image.h"
#include "server/image/resize_weights.h"

namespace vitserve {

enum class Interpolation { kBilinear, kBicubic };

struct PreprocessSpec {
  int64_t input_size = 224;
  double crop_pct = 0.875;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  Interpolation interpolation = Interpolation::kBicubic;
  // Where a request's batch of preprocessed rows is allocated (DecodeAndPreprocess): true for
  // models on CUDA, so the rows are written once, into page-locked memory the GPU copies from
  // directly (needs a CUDA build and device).
  bool pin_memory = false;
  // Classify images go to the model as uint8 pixels, and the model's instance resizes, crops and
  // normalises them on its device (TensorPreprocessor): set from the model config's
  // device_preprocessing. Requests whose images differ in size, or are more than
  // kMaxDeviceResizeFactor times larger than needed, are still preprocessed here.
  bool on_device = false;
  // With on_device, for a model on CUDA (set from the model config's gpu_jpeg_decoding):
  // Classify requests whose JPEGs the GPU can decode (baseline, grey or colour, no EXIF
  // rotation, not reduced in the DCT domain) send the files still encoded (jpeg_part.h), and
  // the model's instance decodes them with nvJPEG before it preprocesses them; the CPU only
  // reads their headers.
  bool gpu_jpeg_decode = false;
  // Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale in libjpeg's DCT domain, down to no less
  // than ResizedShortSide (DecodeImage's reduce_to_short_side): several times faster than a
  // full decode followed by a large shrink, at a cost of about one grey level (decode_test).
  bool jpeg_dct_downscale = true;
};

// Largest shrink factor (source short side over resized short side) that device preprocessing
// takes: beyond it the resize matrices grow with the image while the output does not.
inline constexpr double kMaxDeviceResizeFactor = 2.0;

// INVALID_ARGUMENT for a spec Preprocess cannot use (see below).
absl::Status ValidatePreprocessSpec(const PreprocessSpec& spec);

// Model-input pixel (u, v) (0-based, pixel centres at +0.5) covers original pixel coordinates
//   x = (u + crop_x + 0.5) / scale - 0.5,   y = (v + crop_y + 0.5) / scale - 0.5.
// `scale` is resized_short / original_short; the longer side's exact factor differs from it
// only by the truncation of one pixel (resized_width / original_width).
struct CropGeometry {
  int original_width = 0;
  int original_height = 0;
  double scale = 1.0;
  int crop_x = 0;  // Offset of the crop inside the resized image.
  int crop_y = 0;
  int resized_width = 0;  // The resized image the crop was taken from.
  int resized_height = 0;
};

struct PreprocessedImage {
  at::Tensor tensor;  // [3, S, S] float32, CPU, contiguous, RGB channel order.
  CropGeometry geometry;
};

// The shorter side images are resized to: floor(input_size / crop_pct).
int64_t ResizedShortSide(const PreprocessSpec& spec);

// Where a width x height image lands: the resize to the spec's shorter side and the centre crop.
// Needs positive sizes and a valid spec.
CropGeometry ComputeCropGeometry(int width, int height, const PreprocessSpec& spec);

// The filter Preprocess resizes with for that geometry: kArea when shrinking, else the spec's
// interpolation (kCubic or kLinear).
ResizeFilter ResizeFilterFor(const CropGeometry& geometry, const PreprocessSpec& spec);

absl::StatusOr<PreprocessedImage> Preprocess(const RgbImage& image, const PreprocessSpec& spec);

// The same, writing the [3, S, S] float32 planes into `chw` (3 * S * S floats, e.g. one row of a
// batch tensor, which may live in pinned memory) instead of a tensor of its own.
absl::StatusOr<CropGeometry> PreprocessInto(const RgbImage& image, const PreprocessSpec& spec,
                                            float* chw);

}  // namespace vitserve
