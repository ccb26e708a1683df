// CUDA kernel of FibottentionAttention (fibottention.h): one warp per (batch, head, query row).
// The warp splits into groups of 8/16/32 lanes (fewer for small head dims), each group takes
// every (32/lanes)-th key of the row's kept list, so several keys' loads and dot products are in
// flight at once (one key at a time made the kernel latency-bound: 3–9× slower than dense SDPA
// on an H100). Each group runs an online softmax (running max m, denominator l, accumulator
// acc, rescaled when m grows); the groups' states are merged with warp shuffles at the end. With
// the official semantics the masked keys are one extra "virtual key" of logit 0 and value
// (Σ_all v − Σ_kept v) with weight (T − c): it is folded in after the loop, with 0 included in m.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_dtypes.cuh"
#include "models/fibottention/internal/fib_kernels.h"

namespace vitserve::fibottention::internal {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxPerLane = 8;  // d ≤ 256.
constexpr int kWarpsPerBlock = 4;

using cuda_dtypes::FromFloat;
using cuda_dtypes::ToFloat;

// Eight consecutive elements from a 16-byte-aligned address, as floats, in one (fp16/bf16) or
// two (fp32) vector loads.
__device__ __forceinline__ void LoadEight(const float* src, float* dst) {
  const float4 a = reinterpret_cast<const float4*>(src)[0];
  const float4 b = reinterpret_cast<const float4*>(src)[1];
  dst[0] = a.x, dst[1] = a.y, dst[2] = a.z, dst[3] = a.w;
  dst[4] = b.x, dst[5] = b.y, dst[6] = b.z, dst[7] = b.w;
}
template <typename T>  // __half or __nv_bfloat16
__device__ __forceinline__ void LoadEight(const T* src, float* dst) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);  // One 16-byte load.
  cuda_dtypes::UnpackEight<T>(raw, dst);
}

// Online-softmax state of one lane: running max m, denominator l, and its kMaxPerLane output
// channels (acc) and kept-value sums (kept).
struct SoftmaxState {
  float m = -INFINITY;
  float l = 0.f;
  float acc[kMaxPerLane];
  float kept[kMaxPerLane];
};

// Scale of a state whose max moves from m to m_new; 0 for an empty state (m = −∞), which also
// keeps −∞ − −∞ out of the arithmetic.
__device__ __forceinline__ float Rescale(float m, float m_new) {
  return m == -INFINITY ? 0.f : __expf(m - m_new);
}

// kLanes lanes share one key: the warp holds kWarp / kLanes independent keys in flight, each
// group with its own online softmax, merged across groups at the end. Channel of slot i on
// lane `sub` of a group: with kVec (d = kLanes × kMaxPerLane, 16-byte-aligned rows) the lane
// owns channels sub·8 … sub·8+7 and reads each key/value row slice in one vector load;
// otherwise channels interleave, sub + i·kLanes, and are read one by one.
template <int kLanes, bool kVec>
__device__ __forceinline__ int Channel(int sub, int i) {
  return kVec ? sub * kMaxPerLane + i : sub + i * kLanes;
}

template <typename T, int kLanes, bool kVec>
__global__ void FibottentionKernel(FibParams p) {
  constexpr int kGroups = kWarp / kLanes;
  const int lane = threadIdx.x % kWarp;
  const int group = lane / kLanes;
  const int sub = lane % kLanes;
  const long row_id = static_cast<long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const long rows = static_cast<long>(p.batch) * p.heads * p.tokens;
  if (row_id >= rows) return;
  const int t = static_cast<int>(row_id % p.tokens);
  const long bh = row_id / p.tokens;
  const int h = static_cast<int>(bh % p.heads);
  const T* __restrict__ q = static_cast<const T*>(p.q) + row_id * p.dim;
  const T* __restrict__ k = static_cast<const T*>(p.k) + bh * p.tokens * p.dim;
  const T* __restrict__ v = static_cast<const T*>(p.v) + bh * p.tokens * p.dim;
  const int per_lane = (p.dim + kLanes - 1) / kLanes;

  float qr[kMaxPerLane];
  SoftmaxState st;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int e = Channel<kLanes, kVec>(sub, i);
    qr[i] = (i < per_lane && e < p.dim) ? ToFloat(q[e]) * p.scale : 0.f;
    st.acc[i] = 0.f;
    st.kept[i] = 0.f;
  }
  const long count = p.count[static_cast<long>(h) * p.tokens + t];
  const bool all = count == p.tokens;
  const int64_t* keys = p.index + (static_cast<long>(h) * p.tokens + t) * p.width;
  for (long j0 = 0; j0 < count; j0 += kGroups) {
    const long j = j0 + group;
    const bool valid = j < count;
    const long key = !valid ? 0 : (all ? j : keys[j]);
    const T* kj = k + key * p.dim;
    const T* vj = v + key * p.dim;
    float s = 0.f;
    float kv[kMaxPerLane];  // With kVec: this lane's slice of the key row, then the value row.
    if constexpr (kVec) {
      if (valid) {
        LoadEight(kj + sub * kMaxPerLane, kv);
#pragma unroll
        for (int i = 0; i < kMaxPerLane; ++i) s += qr[i] * kv[i];
        LoadEight(vj + sub * kMaxPerLane, kv);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kMaxPerLane; ++i) {
        const int e = Channel<kLanes, kVec>(sub, i);
        if (i < per_lane && e < p.dim && valid) s += qr[i] * ToFloat(kj[e]);
      }
    }
    // Sum over the group's lanes (xor offsets below kLanes stay inside the group).
#pragma unroll
    for (int off = kLanes / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (!valid) continue;
    const float m_new = fmaxf(st.m, s);
    const float correction = Rescale(st.m, m_new);
    const float w = __expf(s - m_new);
    st.l = st.l * correction + w;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int e = Channel<kLanes, kVec>(sub, i);
      if (i < per_lane && e < p.dim) {
        const float vv = kVec ? kv[i] : ToFloat(vj[e]);
        st.acc[i] = st.acc[i] * correction + w * vv;
        st.kept[i] += vv;
      }
    }
    st.m = m_new;
  }
  // Merge the groups' states (softmax over the union of their keys); afterwards every group
  // holds the whole row's state.
#pragma unroll
  for (int off = kLanes; off < kWarp; off *= 2) {
    const float m_other = __shfl_xor_sync(0xffffffffu, st.m, off);
    const float l_other = __shfl_xor_sync(0xffffffffu, st.l, off);
    const float m_new = fmaxf(st.m, m_other);
    const float c_self = Rescale(st.m, m_new), c_other = Rescale(m_other, m_new);
    st.l = st.l * c_self + l_other * c_other;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const float acc_other = __shfl_xor_sync(0xffffffffu, st.acc[i], off);
      st.acc[i] = st.acc[i] * c_self + acc_other * c_other;
      st.kept[i] += __shfl_xor_sync(0xffffffffu, st.kept[i], off);
    }
    st.m = m_new;
  }
  if (group != 0) return;
  if (p.official && count < p.tokens) {  // Masked keys: logit 0, weight (T − c), Σ v − Σ kept v.
    const float m_new = fmaxf(st.m, 0.f);
    const float correction = Rescale(st.m, m_new);
    const float w0 = __expf(-m_new);
    st.l = st.l * correction + static_cast<float>(p.tokens - count) * w0;
    const float* colsum = p.colsum + bh * p.dim;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int e = Channel<kLanes, kVec>(sub, i);
      if (i < per_lane && e < p.dim) {
        st.acc[i] = st.acc[i] * correction + w0 * (colsum[e] - st.kept[i]);
      }
    }
  }
  T* out = static_cast<T*>(p.out) + row_id * p.dim;
  // l = 0 only for an empty row under −∞ masking: NaN, as softmax gives.
  const float inv = 1.f / st.l;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int e = Channel<kLanes, kVec>(sub, i);
    if (i < per_lane && e < p.dim) out[e] = FromFloat<T>(st.acc[i] * inv);
  }
}

template <typename T, int kLanes>
void LaunchLanes(const FibParams& p, dim3 grid, dim3 block, cudaStream_t stream) {
  // Vector loads need every row slice on a 16-byte boundary: d exactly kLanes × 8 and aligned
  // base pointers (rows are then d·sizeof(T) ≥ 16·sizeof(T) bytes apart).
  const bool vec = p.dim == kLanes * kMaxPerLane && TensorsAligned16(p);
  if (vec) {
    FibottentionKernel<T, kLanes, true><<<grid, block, 0, stream>>>(p);
  } else {
    FibottentionKernel<T, kLanes, false><<<grid, block, 0, stream>>>(p);
  }
}

template <typename T>
void LaunchTyped(const FibParams& p, dim3 grid, dim3 block, cudaStream_t stream) {
  // As few lanes per key as keep ≤ kMaxPerLane channels per lane: more keys in flight.
  if (p.dim <= 8 * kMaxPerLane) {
    LaunchLanes<T, 8>(p, grid, block, stream);
  } else if (p.dim <= 16 * kMaxPerLane) {
    LaunchLanes<T, 16>(p, grid, block, stream);
  } else {
    LaunchLanes<T, 32>(p, grid, block, stream);
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
      LaunchTyped<float>(p, grid, block, stream);
      break;
    case FibDtype::kFloat16:
      LaunchTyped<__half>(p, grid, block, stream);
      break;
    case FibDtype::kBFloat16:
      LaunchTyped<__nv_bfloat16>(p, grid, block, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace vitserve::fibottention::internal
