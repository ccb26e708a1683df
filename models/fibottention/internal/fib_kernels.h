// Launcher of the Fibottention CUDA kernel behind fibottention.h, with a plain C interface (raw
// device pointers, a dtype tag) so that fibottention_cuda.cu needs no ATen headers. Used only by
// fibottention.cc in CUDA builds.
// Contract: q, k, v, out contiguous [B, H, T, d] of `dtype`; colsum fp32 [B, H, d] (Σ_t v, read
// only with the official semantics); index int64 [H, T, K] and count int64 [H, T] as in
// FibottentionPattern; d ≤ 256. One warp per query row, online softmax over its kept keys
// (the class row, count == T, walks every key), fp32 accumulation.
// Thread-safety: asynchronous on `stream`. Errors: the returned cudaError_t
// (cudaErrorInvalidValue for d > 256 or an unknown dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vitserve::fibottention::internal {

enum class FibDtype { kFloat32, kFloat16, kBFloat16 };

struct FibParams {
  int batch = 0;
  int heads = 0;
  int tokens = 0;
  int dim = 0;
  int width = 0;  // K
  FibDtype dtype = FibDtype::kFloat32;
  bool official = true;
  float scale = 1.f;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* colsum = nullptr;
  const int64_t* index = nullptr;
  const int64_t* count = nullptr;
  void* out = nullptr;
};

cudaError_t LaunchFibottention(const FibParams& params, cudaStream_t stream);

}  // namespace vitserve::fibottention::internal
