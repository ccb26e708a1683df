// Exponentials on the special-function unit without the denormal fix-up. exp2f and __expf add
// three instructions per call (a compare and two multiplies) that keep results below 2^-126
// exact; these flush such results to zero. For the decay factors of a scan's state or the
// weights of an online softmax, which multiply or add to values of order one or more, a
// result below 2^-126 is zero at fp32 precision anyway, so the instructions buy nothing on the
// hot loops that call these once per (token, state) or per (row, key).
// Device code only: include from .cu files.
#pragma once

namespace vitserve::cuda_fast_math {

// log2(e): e^x = 2^(x · kLog2e).
constexpr float kLog2e = 1.4426950408889634f;

// 2^x, with results below 2^-126 flushed to zero (ex2.approx.ftz: about 2 ulp).
__device__ __forceinline__ float Exp2FlushDenormals(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// e^x as __expf computes it (2^(x · log2 e)), with results below 2^-126 flushed to zero.
__device__ __forceinline__ float ExpFlushDenormals(float x) {
  return Exp2FlushDenormals(x * kLog2e);
}

}  // namespace vitserve::cuda_fast_math
