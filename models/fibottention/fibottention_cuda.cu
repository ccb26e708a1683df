// CUDA kernel of FibottentionAttention (fibottention.h): one warp per (batch, head, query row);
// each lane holds d/32 (≤ 8) output channels. Keys are visited in the row's kept list with an
// online softmax (running max m, denominator l, accumulator acc, rescaled when m grows). With
// the official semantics the masked keys are one extra "virtual key" of logit 0 and value
// (Σ_all v − Σ_kept v) with weight (T − c): it is folded in after the loop, with 0 included in m.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "models/fibottention/internal/fib_kernels.h"

namespace vitserve::fibottention::internal {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxPerLane = 8;  // d ≤ 256.
constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

template <typename T>
__global__ void FibottentionKernel(FibParams p) {
  const int lane = threadIdx.x % kWarp;
  const long row_id = static_cast<long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const long rows = static_cast<long>(p.batch) * p.heads * p.tokens;
  if (row_id >= rows) return;
  const int t = static_cast<int>(row_id % p.tokens);
  const long bh = row_id / p.tokens;
  const int h = static_cast<int>(bh % p.heads);
  const T* q = static_cast<const T*>(p.q) + row_id * p.dim;
  const T* k = static_cast<const T*>(p.k) + bh * p.tokens * p.dim;
  const T* v = static_cast<const T*>(p.v) + bh * p.tokens * p.dim;
  const int per_lane = (p.dim + kWarp - 1) / kWarp;

  float qr[kMaxPerLane], acc[kMaxPerLane], kept[kMaxPerLane];
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int e = lane + i * kWarp;
    qr[i] = (i < per_lane && e < p.dim) ? ToFloat(q[e]) * p.scale : 0.f;
    acc[i] = 0.f;
    kept[i] = 0.f;
  }
  const long count = p.count[static_cast<long>(h) * p.tokens + t];
  const bool all = count == p.tokens;
  const int64_t* keys = p.index + (static_cast<long>(h) * p.tokens + t) * p.width;
  float m = -INFINITY, l = 0.f;
  for (long j = 0; j < count; ++j) {
    const long key = all ? j : keys[j];
    const T* kj = k + key * p.dim;
    const T* vj = v + key * p.dim;
    float s = 0.f;
    for (int i = 0; i < per_lane; ++i) {
      const int e = lane + i * kWarp;
      if (e < p.dim) s += qr[i] * ToFloat(kj[e]);
    }
    for (int off = kWarp / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    const float m_new = fmaxf(m, s);
    const float correction = __expf(m - m_new);  // 0 on the first key (m = −∞).
    const float w = __expf(s - m_new);
    l = l * correction + w;
    for (int i = 0; i < per_lane; ++i) {
      const int e = lane + i * kWarp;
      if (e < p.dim) {
        const float vv = ToFloat(vj[e]);
        acc[i] = acc[i] * correction + w * vv;
        kept[i] += vv;
      }
    }
    m = m_new;
  }
  if (p.official && count < p.tokens) {  // Masked keys: logit 0, weight (T − c), Σ v − Σ kept v.
    const float m_new = fmaxf(m, 0.f);
    const float correction = __expf(m - m_new);
    const float w0 = __expf(-m_new);
    l = l * correction + static_cast<float>(p.tokens - count) * w0;
    const float* colsum = p.colsum + bh * p.dim;
    for (int i = 0; i < per_lane; ++i) {
      const int e = lane + i * kWarp;
      if (e < p.dim) acc[i] = acc[i] * correction + w0 * (colsum[e] - kept[i]);
    }
  }
  T* out = static_cast<T*>(p.out) + row_id * p.dim;
  const float inv = 1.f / l;  // l = 0 only for an empty row under −∞ masking: NaN, as softmax.
  for (int i = 0; i < per_lane; ++i) {
    const int e = lane + i * kWarp;
    if (e < p.dim) out[e] = FromFloat<T>(acc[i] * inv);
  }
}

}  // namespace

cudaError_t LaunchFibottention(const FibParams& p, cudaStream_t stream) {
  if (p.dim <= 0 || p.dim > kWarp * kMaxPerLane) return cudaErrorInvalidValue;
  const long rows = static_cast<long>(p.batch) * p.heads * p.tokens;
  if (rows == 0) return cudaSuccess;
  const dim3 block(kWarp * kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
  switch (p.dtype) {
    case FibDtype::kFloat32:
      FibottentionKernel<float><<<grid, block, 0, stream>>>(p);
      break;
    case FibDtype::kFloat16:
      FibottentionKernel<__half><<<grid, block, 0, stream>>>(p);
      break;
    case FibDtype::kBFloat16:
      FibottentionKernel<__nv_bfloat16><<<grid, block, 0, stream>>>(p);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace vitserve::fibottention::internal
