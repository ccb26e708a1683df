// Launcher of the fused CUDA kernel behind TensorPreprocessor (tensor_preprocess.h), with a plain
// C interface (raw device pointers, a dtype tag) so that preprocess_kernel.cu needs no ATen
// headers. Used only by tensor_preprocess.cc in CUDA builds.
//
// What it computes equals TensorPreprocessor's tensor ops: for each output pixel, the separable
// resize-and-crop sum (columns first, then rows) of the uint8 source in float32, clamped to
// [0, 255], rounded half up, then `value * scale[c] + offset[c]`, written in the output dtype.
// The resize matrices come as taps: output index o reads `taps` consecutive source pixels from
// `start[o]`, weighted by `weight[o * taps + k]` (zero weights allowed).
// Contract: every pointer is device memory; strides are in elements; the taps never read outside
// the source (start[o] + taps <= length).
// Thread-safety: asynchronous on `stream`. Errors: the returned cudaError_t
// (cudaErrorInvalidValue for an unknown dtype or non-positive sizes).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vitserve::image_internal {

enum class PreprocessDtype { kFloat32, kFloat16, kBFloat16 };

struct ResizeTaps {
  const int32_t* start = nullptr;  // [size]
  const float* weight = nullptr;   // [size, taps]
  int taps = 0;
};

struct PreprocessParams {
  int batch = 0;
  int height = 0;  // Source.
  int width = 0;
  int size = 0;    // Output side S.
  const uint8_t* images = nullptr;  // [batch, height, width, 3]
  int64_t image_strides[4] = {0, 0, 0, 0};
  ResizeTaps rows;     // size outputs over `height`.
  ResizeTaps columns;  // size outputs over `width`.
  float scale[3] = {1.f, 1.f, 1.f};
  float offset[3] = {0.f, 0.f, 0.f};
  PreprocessDtype dtype = PreprocessDtype::kFloat32;
  void* out = nullptr;  // [batch, 3, size, size], any strides.
  int64_t out_strides[4] = {0, 0, 0, 0};
};

cudaError_t LaunchPreprocess(const PreprocessParams& params, cudaStream_t stream);

}  // namespace vitserve::image_internal
