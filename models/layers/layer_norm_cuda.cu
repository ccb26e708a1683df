// CUDA kernel of layers::LayerNorm (layer_norm.h): one warp per row, the row held in registers.
//
// Why not ATen's: its kernel gives every row a block of 128 threads and reduces through shared
// memory with barriers, which suits wide rows. A ViT's rows are narrow (192 elements for
// deit_tiny: 384 bytes in fp16), so most of each block idles and the time goes to launching
// and synchronising blocks: on the H200 ATen's layer norms took 32% of deit_tiny's forward pass
// (1,672 of 5,151 us at batch 256; docs/performance.md, run A) for what is a few microseconds of
// memory traffic each. Here a warp reads its row once in 2-element vectors (lane l takes pairs
// l, l + 32, ...: each load instruction of the warp reads 256 or 512 consecutive bytes), reduces
// the mean and then the centred variance with shuffles (two passes over registers, as exact as
// ATen's Welford), and writes the normalised row.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_dtypes.cuh"
#include "models/layers/internal/layer_norm_kernel.h"

namespace vitserve::layers::internal {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;

// Two consecutive elements as floats, and back.
struct Pair {
  float x, y;
};
template <typename T>
__device__ __forceinline__ Pair LoadPair(const T* p) {
  using Vector = typename cuda_dtypes::PairOf<T>::Type;
  const float2 v = cuda_dtypes::ToFloat2(*reinterpret_cast<const Vector*>(p));
  return {v.x, v.y};
}
template <typename T>
__device__ __forceinline__ void StorePair(T* p, Pair v) {
  using Vector = typename cuda_dtypes::PairOf<T>::Type;
  *reinterpret_cast<Vector*>(p) = cuda_dtypes::FromFloat2<T>(make_float2(v.x, v.y));
}

__device__ __forceinline__ float WarpSum(float value) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  }
  return value;
}

// kPairs pairs per lane: dim == 64 * kPairs.
template <typename T, int kPairs>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock)
    LayerNormKernel(const T* __restrict__ input, const T* __restrict__ weight,
                    const T* __restrict__ bias, T* __restrict__ output, int64_t rows, float eps) {
  constexpr int kDim = 64 * kPairs;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const T* in = input + row * kDim;
  Pair values[kPairs];
  float sum = 0.f;
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    values[p] = LoadPair(in + 2 * (p * kWarp + lane));
    sum += values[p].x + values[p].y;
  }
  const float mean = WarpSum(sum) * (1.f / kDim);
  float squares = 0.f;
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    values[p].x -= mean;
    values[p].y -= mean;
    squares += values[p].x * values[p].x + values[p].y * values[p].y;
  }
  const float rstd = rsqrtf(WarpSum(squares) * (1.f / kDim) + eps);
  T* out = output + row * kDim;
#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    const int offset = 2 * (p * kWarp + lane);
    const Pair w = LoadPair(weight + offset);
    const Pair b = LoadPair(bias + offset);
    StorePair(out + offset, {values[p].x * rstd * w.x + b.x, values[p].y * rstd * w.y + b.y});
  }
}

template <typename T, int kPairs>
cudaError_t Launch(const LayerNormParams& params, cudaStream_t stream) {
  const int64_t blocks = (params.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  LayerNormKernel<T, kPairs><<<static_cast<unsigned>(blocks), kWarp * kWarpsPerBlock, 0, stream>>>(
      static_cast<const T*>(params.input), static_cast<const T*>(params.weight),
      static_cast<const T*>(params.bias), static_cast<T*>(params.output), params.rows,
      params.eps);
  return cudaGetLastError();
}

// The instantiation for params.dim (64 .. kMaxLayerNormDim in steps of 64).
template <typename T, int kPairs = 1>
cudaError_t DispatchDim(const LayerNormParams& params, cudaStream_t stream) {
  if constexpr (64 * kPairs > kMaxLayerNormDim) {
    return cudaErrorInvalidValue;
  } else {
    if (params.dim == 64 * kPairs) return Launch<T, kPairs>(params, stream);
    return DispatchDim<T, kPairs + 1>(params, stream);
  }
}

}  // namespace

cudaError_t LaunchLayerNorm(const LayerNormParams& params, cudaStream_t stream) {
  if (!LayerNormKernelSupportsDim(params.dim) || params.rows < 0) return cudaErrorInvalidValue;
  if (params.rows == 0) return cudaSuccess;
  switch (params.dtype) {
    case LayerNormDtype::kFloat32:
      return DispatchDim<float>(params, stream);
    case LayerNormDtype::kFloat16:
      return DispatchDim<__half>(params, stream);
    case LayerNormDtype::kBFloat16:
      return DispatchDim<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace vitserve::layers::internal
