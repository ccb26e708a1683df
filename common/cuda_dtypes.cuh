// Conversions between float and the element types of the project's CUDA kernels (float, __half,
// __nv_bfloat16), one element or two at a time, with round-to-nearest-even. One definition for
// every kernel (layer norm, Fibottention, the Vision Mamba scan, image preprocessing), which
// each used to carry its own copy.
// Device code only: include from .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace vitserve::cuda_dtypes {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// The two-element vector type of T (float2, __half2, __nv_bfloat162): .x is the lower address.
template <typename T>
struct PairOf;
template <>
struct PairOf<float> {
  using Type = float2;
};
template <>
struct PairOf<__half> {
  using Type = __half2;
};
template <>
struct PairOf<__nv_bfloat16> {
  using Type = __nv_bfloat162;
};

__device__ __forceinline__ float2 ToFloat2(float2 v) { return v; }
__device__ __forceinline__ float2 ToFloat2(__half2 v) { return __half22float2(v); }
__device__ __forceinline__ float2 ToFloat2(__nv_bfloat162 v) { return __bfloat1622float2(v); }

template <typename T>
__device__ __forceinline__ typename PairOf<T>::Type FromFloat2(float2 v);
template <>
__device__ __forceinline__ float2 FromFloat2<float>(float2 v) {
  return v;
}
template <>
__device__ __forceinline__ __half2 FromFloat2<__half>(float2 v) {
  return __floats2half2_rn(v.x, v.y);
}
template <>
__device__ __forceinline__ __nv_bfloat162 FromFloat2<__nv_bfloat16>(float2 v) {
  return __floats2bfloat162_rn(v.x, v.y);
}

// Eight consecutive 16-bit elements (__half or __nv_bfloat16) as floats, out[0..7] in memory
// order. Passed a reference into memory, nvcc reads `raw` as four 32-bit loads (PTX); a caller
// that wants one 16-byte load copies it into a local first.
template <typename T>
__device__ __forceinline__ void UnpackEight(const uint4& raw, float* out) {
  static_assert(sizeof(T) == 2, "eight elements of T fill 16 bytes only for 16-bit types");
  const auto* pairs = reinterpret_cast<const typename PairOf<T>::Type*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = ToFloat2(pairs[j]);
    out[2 * j] = f.x;
    out[2 * j + 1] = f.y;
  }
}

}  // namespace vitserve::cuda_dtypes
