// The softmax top-k kernel of internal/top_k_kernel.h: one block per row. The row's logits are
// read once (and written out as float32), their exponentials kept in shared memory, and each of
// the k places is one pass over them that picks the best class ranked after the previous place,
// so no class needs to be marked as taken: for 1,000 classes and k = 5, one read of the row into
// shared memory, then six passes over those 4 KB per block. On the host the same work was 5.6%
// of the server's CPU at 1024 clients (docs/performance.md, run 27).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "server/runtime/internal/top_k_kernel.h"

namespace vitserve::runtime_internal {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// The largest row's dynamic shared memory and the reduction scratch fit the default 48 KB (a
// launch asking for more fails).
static_assert(kMaxTopKClasses * sizeof(float) + kWarps * (sizeof(float) + sizeof(int)) <=
              48 * 1024);

// Whether (value, index) ranks before (other_value, other_index): larger first, equal values in
// ascending index order. An index of -1 (nothing) ranks after everything.
__device__ __forceinline__ bool RanksBefore(float value, int index, float other_value,
                                            int other_index) {
  if (index < 0) return false;
  if (other_index < 0) return true;
  return value > other_value || (value == other_value && index < other_index);
}

// Reduces each thread's (value, index) over the block with `combine` (which folds its second
// pair into its first); every thread gets the same result, combined in the same order.
template <typename Combine>
__device__ void BlockReduce(float& value, int& index, Combine combine, float* warp_values,
                            int* warp_indices) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
    const int other_index = __shfl_xor_sync(0xffffffffu, index, offset);
    combine(value, index, other_value, other_index);
  }
  __syncthreads();  // Every thread has read the previous reduction's partial results.
  if (threadIdx.x % 32 == 0) {
    warp_values[threadIdx.x / 32] = value;
    warp_indices[threadIdx.x / 32] = index;
  }
  __syncthreads();
  value = warp_values[0];
  index = warp_indices[0];
  for (int w = 1; w < kWarps; ++w) combine(value, index, warp_values[w], warp_indices[w]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) SoftmaxTopKKernel(SoftmaxTopKParams p) {
  extern __shared__ float exponentials[];  // [classes]
  __shared__ float warp_values[kWarps];
  __shared__ int warp_indices[kWarps];
  const T* logits = static_cast<const T*>(p.logits) + blockIdx.x * p.logits_row_stride;
  float* out = p.out + blockIdx.x * p.out_row_stride;

  float max = -INFINITY;
  int unused = 0;
  for (int c = threadIdx.x; c < p.classes; c += kThreads) {
    const float x = static_cast<float>(logits[c]);  // __half and __nv_bfloat16 convert.
    out[c] = x;
    exponentials[c] = x;
    max = fmaxf(max, x);
  }
  BlockReduce(
      max, unused, [](float& a, int&, float b, int) { a = fmaxf(a, b); }, warp_values,
      warp_indices);
  float sum = 0.f;
  for (int c = threadIdx.x; c < p.classes; c += kThreads) {
    const float e = expf(exponentials[c] - max);
    exponentials[c] = e;
    sum += e;
  }
  BlockReduce(
      sum, unused, [](float& a, int&, float b, int) { a += b; }, warp_values, warp_indices);
  const float scale = 1.f / sum;

  // Place j is the best class that ranks after place j - 1, ranked by the scaled probability
  // (as TopKSoftmax ranks them: two exponentials may round to one probability).
  float previous = INFINITY;
  int previous_index = -1;
  for (int j = 0; j < p.k; ++j) {
    float best = 0.f;
    int best_index = -1;
    if (j == 0 || previous_index >= 0) {
      for (int c = threadIdx.x; c < p.classes; c += kThreads) {
        const float e = exponentials[c] * scale;
        const bool after_previous = e < previous || (e == previous && c > previous_index);
        if (after_previous && RanksBefore(e, c, best, best_index)) {
          best = e;
          best_index = c;
        }
      }
    }
    BlockReduce(
        best, best_index,
        [](float& a, int& a_index, float b, int b_index) {
          if (RanksBefore(b, b_index, a, a_index)) {
            a = b;
            a_index = b_index;
          }
        },
        warp_values, warp_indices);
    if (threadIdx.x == 0) {
      out[p.classes + j] = best_index >= 0 ? best : NAN;
      out[p.classes + p.k + j] = static_cast<float>(best_index);
    }
    previous = best;
    previous_index = best_index;
  }
}

template <typename T>
void Launch(const SoftmaxTopKParams& p, cudaStream_t stream) {
  const size_t shared_bytes = static_cast<size_t>(p.classes) * sizeof(float);
  SoftmaxTopKKernel<T><<<p.rows, kThreads, shared_bytes, stream>>>(p);
}

}  // namespace

cudaError_t LaunchSoftmaxTopK(const SoftmaxTopKParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.classes <= 0 || p.classes > kMaxTopKClasses || p.k < 1 ||
      p.k > p.classes || p.logits == nullptr || p.out == nullptr ||
      p.logits_row_stride < p.classes || p.out_row_stride < p.classes + 2 * p.k) {
    return cudaErrorInvalidValue;
  }
  switch (p.dtype) {
    case LogitsDtype::kFloat32:
      Launch<float>(p, stream);
      break;
    case LogitsDtype::kFloat16:
      Launch<__half>(p, stream);
      break;
    case LogitsDtype::kBFloat16:
      Launch<__nv_bfloat16>(p, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace vitserve::runtime_internal
