// CUDA kernels of the Vision Mamba mixer: the selective scan (selective_scan.h gives the
// equations) and the causal depthwise conv1d + SiLU. Launchers: internal/scan_kernels.h.
//
// Scan: one thread per (batch, channel, sequence chunk); a block holds kScanThreads consecutive
// channels of one batch and chunk, so each time step's loads of u, delta and z are coalesced
// (channels are contiguous). Within its chunk a block walks sub-chunks of kChunk steps: it first
// stages their B_t and C_t (shared by all channels) in shared memory, then every thread advances
// its d_state-sized state, held in registers in fp32. When batch × channels alone cannot fill
// the GPU (small batches, long sequences) the sequence is split into chunks scanned in
// parallel: pass 1 computes each chunk's end state from zero, pass 2 folds the earlier chunks'
// states into its start state (the recurrence is linear) and writes the outputs. Bias + softplus of Δ, the D skip and the
// SiLU(z) gate are fused, as is the direction (reverse walks t = L−1 … 0), so the backward branch
// of the bidirectional block needs no flipped copies.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "models/vim/internal/scan_kernels.h"

namespace vitserve::vim::internal {
namespace {

constexpr int kScanThreads = 128;
constexpr int kChunk = 64;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float Silu(float v) { return v / (1.0f + expf(-v)); }

// softplus with PyTorch's threshold (linear above 20).
__device__ __forceinline__ float Softplus(float v) { return v <= 20.0f ? log1pf(expf(v)) : v; }

// kPass 0: the whole sequence in one chunk (h starts at 0), writing outputs.
// kPass 1: chunk-local scan from h = 0, writing only the end state and Σ Δ to the workspace.
// kPass 2: the chunk's start state is folded from the earlier chunks' workspace entries
//          (h ← exp(A·ΣΔ_j)·h + h_j, since Π_t exp(Δ_t·A) = exp(A·Σ_t Δ_t)), then outputs.
// Chunks and steps are numbered in scan order: step s is token t = s, or L−1−s when reverse.
template <typename T, int kN, int kPass>
__global__ void __launch_bounds__(kScanThreads) SelectiveScanKernel(ScanParams p) {
  __shared__ float smem_b[kChunk][kN];
  __shared__ float smem_c[kChunk][kN];

  const int batch = blockIdx.z;
  const int chunk = blockIdx.y;
  const int channel = blockIdx.x * kScanThreads + threadIdx.x;
  const bool active = channel < p.channels;
  const int chunk_len = (p.length + p.chunks - 1) / p.chunks;
  const int begin = chunk * chunk_len;
  const int end = min(p.length, begin + chunk_len);

  const T* u = static_cast<const T*>(p.u.data) + batch * p.u.batch_stride + channel;
  const T* delta = static_cast<const T*>(p.delta.data) + batch * p.delta.batch_stride + channel;
  const T* z = p.z.data == nullptr
                   ? nullptr
                   : static_cast<const T*>(p.z.data) + batch * p.z.batch_stride + channel;
  const T* b_base = static_cast<const T*>(p.B.data) + batch * p.B.batch_stride;
  const T* c_base = static_cast<const T*>(p.C.data) + batch * p.C.batch_stride;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(batch) * p.length * p.channels + channel;
  // Workspace entry of (batch, chunk j), state n, this channel.
  auto ws = [&](int j, int n) -> float* {
    return p.workspace +
           ((static_cast<int64_t>(batch) * p.chunks + j) * (kN + 1) + n) * p.channels + channel;
  };

  // A pre-multiplied by log2(e) so that exp(Δ·A) = exp2(Δ·A').
  float a2[kN];
  float h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    a2[n] = active ? p.A[channel * kN + n] * kLog2e : 0.0f;
    h[n] = 0.0f;
  }
  if (kPass == 2 && active) {
    for (int j = 0; j < chunk; ++j) {
      const float sum_dt = *ws(j, kN);
#pragma unroll
      for (int n = 0; n < kN; ++n) h[n] = exp2f(sum_dt * a2[n]) * h[n] + *ws(j, n);
    }
  }
  const float d_skip = (active && p.D != nullptr) ? p.D[channel] : 0.0f;
  const float bias = (active && p.delta_bias != nullptr) ? p.delta_bias[channel] : 0.0f;
  float sum_dt = 0.0f;

  for (int sub = begin; sub < end; sub += kChunk) {
    const int steps = min(kChunk, end - sub);
    __syncthreads();  // The previous sub-chunk's B/C are no longer read.
    for (int i = threadIdx.x; i < steps * kN; i += kScanThreads) {
      const int s = i / kN, n = i % kN;
      const int t = p.reverse ? p.length - 1 - (sub + s) : sub + s;
      smem_b[s][n] = ToFloat(b_base[t * p.B.length_stride + n]);
      if (kPass != 1) smem_c[s][n] = ToFloat(c_base[t * p.C.length_stride + n]);
    }
    __syncthreads();
    if (!active) continue;
    for (int s = 0; s < steps; ++s) {
      const int t = p.reverse ? p.length - 1 - (sub + s) : sub + s;
      const float u_t = ToFloat(u[t * p.u.length_stride]);
      float dt = ToFloat(delta[t * p.delta.length_stride]) + bias;
      if (p.delta_softplus) dt = Softplus(dt);
      const float dt_u = dt * u_t;
      if (kPass == 1) {
        sum_dt += dt;
#pragma unroll
        for (int n = 0; n < kN; ++n) h[n] = exp2f(dt * a2[n]) * h[n] + dt_u * smem_b[s][n];
        continue;
      }
      float y = 0.0f;
#pragma unroll
      for (int n = 0; n < kN; ++n) {
        h[n] = exp2f(dt * a2[n]) * h[n] + dt_u * smem_b[s][n];
        y += smem_c[s][n] * h[n];
      }
      y += d_skip * u_t;
      if (z != nullptr) y *= Silu(ToFloat(z[t * p.z.length_stride]));
      out[static_cast<int64_t>(t) * p.channels] = FromFloat<T>(y);
    }
  }
  if (kPass == 1 && active) {
#pragma unroll
    for (int n = 0; n < kN; ++n) *ws(chunk, n) = h[n];
    *ws(chunk, kN) = sum_dt;
  }
}

// One thread per output element; channels innermost so neighbouring threads read neighbouring
// addresses. Taps outside [0, L) are the conv's zero padding.
template <typename T>
__global__ void CausalConv1dSiluKernel(ConvParams p) {
  const int64_t total = static_cast<int64_t>(p.batch) * p.length * p.channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int channel = static_cast<int>(i % p.channels);
    const int64_t bt = i / p.channels;
    const int t = static_cast<int>(bt % p.length);
    const int batch = static_cast<int>(bt / p.length);
    const T* x = static_cast<const T*>(p.x.data) + batch * p.x.batch_stride + channel;
    float acc = p.bias != nullptr ? p.bias[channel] : 0.0f;
    for (int k = 0; k < p.kernel; ++k) {
      const int src = p.reverse ? t + (p.kernel - 1) - k : t - (p.kernel - 1) + k;
      if (src >= 0 && src < p.length) {
        acc += p.weight[channel * p.kernel + k] * ToFloat(x[src * p.x.length_stride]);
      }
    }
    static_cast<T*>(p.out)[i] = FromFloat<T>(Silu(acc));
  }
}

template <typename T, int kN>
cudaError_t LaunchScanState(const ScanParams& p, cudaStream_t stream) {
  const dim3 grid((p.channels + kScanThreads - 1) / kScanThreads, p.chunks, p.batch);
  if (p.chunks <= 1) {
    SelectiveScanKernel<T, kN, 0><<<grid, kScanThreads, 0, stream>>>(p);
  } else {
    if (p.workspace == nullptr) return cudaErrorInvalidValue;
    SelectiveScanKernel<T, kN, 1><<<grid, kScanThreads, 0, stream>>>(p);
    SelectiveScanKernel<T, kN, 2><<<grid, kScanThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchScanTyped(const ScanParams& p, cudaStream_t stream) {
  switch (p.d_state) {
    case 16:
      return LaunchScanState<T, 16>(p, stream);
    case 8:
      return LaunchScanState<T, 8>(p, stream);
    case 4:
      return LaunchScanState<T, 4>(p, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t LaunchConvTyped(const ConvParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = static_cast<int64_t>(p.batch) * p.length * p.channels;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const int grid = static_cast<int>(blocks < 65536 * 8 ? blocks : 65536 * 8);
  CausalConv1dSiluKernel<T><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchSelectiveScan(const ScanParams& params, cudaStream_t stream) {
  if (params.batch == 0 || params.length == 0 || params.channels == 0) return cudaSuccess;
  if (params.batch > 65535 || params.chunks < 1 || params.chunks > 65535) {
    return cudaErrorInvalidValue;
  }
  switch (params.dtype) {
    case ScanDtype::kFloat32:
      return LaunchScanTyped<float>(params, stream);
    case ScanDtype::kFloat16:
      return LaunchScanTyped<__half>(params, stream);
    case ScanDtype::kBFloat16:
      return LaunchScanTyped<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchCausalConv1dSilu(const ConvParams& params, cudaStream_t stream) {
  if (params.batch == 0 || params.length == 0 || params.channels == 0) return cudaSuccess;
  if (params.kernel < 1 || params.kernel > 8) return cudaErrorInvalidValue;
  switch (params.dtype) {
    case ScanDtype::kFloat32:
      return LaunchConvTyped<float>(params, stream);
    case ScanDtype::kFloat16:
      return LaunchConvTyped<__half>(params, stream);
    case ScanDtype::kBFloat16:
      return LaunchConvTyped<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace vitserve::vim::internal
