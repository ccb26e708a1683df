// TensorPreprocessor: Preprocess (resize, centre crop, normalise; see preprocess.h) for a batch
// of uint8 images that are already on the model's device, as tensor ops: the pixels are widened
// to float, resized and cropped by two matrix products with ResizeCropMatrix weights (columns,
// then rows), clamped to [0, 255] and rounded as an 8-bit resize would, normalised, and written
// into rows of the model's input in its dtype. On a GPU this replaces the CPU's resize and float conversion
// (the expensive part of serving small images) with a few kernels per batch, and the host sends
// a quarter of the bytes.
//
// The result equals Preprocess's but where OpenCV's fixed-point resize rounds a pixel the other
// way: such pixels are one grey level (1 / (255 * std) after normalisation) apart.
//
// On a CUDA device (CUDA builds) the same arithmetic runs as one fused kernel
// (internal/preprocess_kernel.h): a read of the pixels and a write of the input per batch.
//
// Ownership: owns its cache of weight matrices (one pair per source image size, on the device
// they were used on; at most kMaxCachedSizes pairs, then the cache starts over).
// Thread-safety: NOT thread-safe: one per model instance, used by its executor thread.
// Errors: Run throws c10::Error (bad shapes, device errors), as the tensor ops it runs do.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <map>
#include <utility>

#include "server/image/preprocess.h"

namespace vitserve {

class TensorPreprocessor {
 public:
  static constexpr size_t kMaxCachedSizes = 64;

  // `spec` must be valid (ValidatePreprocessSpec).
  explicit TensorPreprocessor(const PreprocessSpec& spec);

  // images: uint8 [n, h, w, 3] (RGB, any device, any strides); out: [n, 3, S, S] of a floating
  // dtype on the same device (e.g. rows of a CUDA graph's static input), overwritten.
  void Run(const at::Tensor& images, at::Tensor out);

 private:
  struct Weights {
    c10::Device device = c10::kCPU;  // Where the tensors below are.
    at::Tensor columns;  // [w, S] float32: the column resize, transposed.
    at::Tensor rows;     // [h, S] float32: the row resize, transposed.
    // The same resizes as taps for the fused CUDA kernel: per output index, the first source
    // index (int32 [S]) and `taps` consecutive weights (float32 [S, taps]).
    at::Tensor column_start, column_weights, row_start, row_weights;
    int64_t column_taps = 0;
    int64_t row_taps = 0;
  };
  // images on a CUDA device: one fused kernel instead of the tensor ops.
  void RunFused(const at::Tensor& images, const Weights& weights, at::Tensor out);
  const Weights& WeightsFor(int64_t height, int64_t width, const at::Tensor& like);

  const PreprocessSpec spec_;
  std::map<std::pair<int64_t, int64_t>, Weights> weights_;  // By (height, width).
  // Normalisation per channel, for both paths: value * scale + offset with scale =
  // 1 / (255 * std) and offset = -mean / std.
  std::array<float, 3> scale_values_{};
  std::array<float, 3> offset_values_{};
  at::Tensor scale_;   // The tensor-op path's [1, 3, 1, 1] float32 copies of those.
  at::Tensor offset_;
};

}  // namespace vitserve
