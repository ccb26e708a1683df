// Launcher of layers::LayerNorm's CUDA kernel (layer_norm.h), with a plain C interface (raw
// device pointers, a dtype tag) so that layer_norm_cuda.cu needs no ATen headers. Used only by
// layer_norm.cc in CUDA builds.
// Contract: input and output contiguous [rows, dim]; weight and bias [dim], all of `dtype`;
// dim a multiple of 64 and at most kMaxLayerNormDim (LayerNormKernelSupportsDim); pointers
// aligned to 4 bytes (fp16/bf16) or 8 bytes (fp32). Statistics in fp32, as ATen's.
// Thread-safety: asynchronous on `stream`. Errors: the returned cudaError_t
// (cudaErrorInvalidValue for an unsupported dim).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vitserve::layers::internal {

enum class LayerNormDtype { kFloat32, kFloat16, kBFloat16 };

inline constexpr int64_t kMaxLayerNormDim = 1024;

inline constexpr bool LayerNormKernelSupportsDim(int64_t dim) {
  return dim > 0 && dim % 64 == 0 && dim <= kMaxLayerNormDim;
}

struct LayerNormParams {
  int64_t rows = 0;
  int dim = 0;
  float eps = 1e-5f;
  LayerNormDtype dtype = LayerNormDtype::kFloat32;
  const void* input = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* output = nullptr;
};

cudaError_t LaunchLayerNorm(const LayerNormParams& params, cudaStream_t stream);

}  // namespace vitserve::layers::internal
