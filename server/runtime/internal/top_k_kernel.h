// Launcher of the CUDA kernel behind InstanceOptions::device_top_k (model_instance.h), with a
// plain C interface (raw device pointers, a dtype tag) so that top_k_kernel.cu needs no ATen
// headers. Used only by model_instance.cc in CUDA builds.
//
// For each row of a classifier's logits it writes one float32 output row of classes + 2k
// columns (models/heads/topk.h, ClassifierOutputLayout): the logits as float32, then the k
// largest softmax probabilities, best first (equal probabilities in ascending class order, as
// TopKSoftmax orders them), then their class indices as floats (exact: classes is far below
// 2^24). Probabilities are computed as TopKSoftmax does: exp(x - max) in float32, scaled by the
// float32 reciprocal of their sum (summed in float32 here, in double there). A row whose
// probabilities are all NaN gets NaN and index -1 in the places it cannot fill.
// Contract: every pointer is device memory; 1 <= k <= classes <= kMaxTopKClasses; strides are
// in elements, the column stride is 1.
// Thread-safety: asynchronous on `stream`. Errors: the returned cudaError_t
// (cudaErrorInvalidValue for an unknown dtype or sizes outside the contract).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vitserve::runtime_internal {

// A row's probabilities are held in shared memory, beside the kernel's reduction scratch, within
// the 48 KB a block gets without opting in to more.
inline constexpr int64_t kMaxTopKClasses = 12000;

enum class LogitsDtype { kFloat32, kFloat16, kBFloat16 };

struct SoftmaxTopKParams {
  int rows = 0;
  int classes = 0;
  int k = 0;
  const void* logits = nullptr;  // [rows, classes]
  int64_t logits_row_stride = 0;
  LogitsDtype dtype = LogitsDtype::kFloat32;
  float* out = nullptr;  // [rows, classes + 2k]
  int64_t out_row_stride = 0;
};

cudaError_t LaunchSoftmaxTopK(const SoftmaxTopKParams& params, cudaStream_t stream);

}  // namespace vitserve::runtime_internal
