// CUDA kernels of the Vision Mamba blocks: the selective scan (selective_scan.h gives the
// equations), the causal depthwise conv1d + SiLU, and the fused residual add + RMSNorm.
// Launchers: internal/scan_kernels.h.
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

#include "common/cuda_dtypes.cuh"
#include "models/vim/internal/scan_kernels.h"

namespace vitserve::vim::internal {
namespace {

constexpr int kScanThreads = 128;
constexpr int kChunk = 64;
constexpr int kGroup = 8;  // steps whose loads are issued together; divides kChunk
constexpr float kLog2e = 1.4426950408889634f;

using cuda_dtypes::FromFloat;
using cuda_dtypes::ToFloat;

__device__ __forceinline__ float Silu(float v) { return v / (1.0f + expf(-v)); }

// 2^x on the special-function unit. exp2f adds three instructions per call that keep results
// below 2^-126 (denormals) exact; here they flush to zero, which for a decay factor multiplying
// the state changes nothing at fp32 precision. The scan calls it once per (token, state).
__device__ __forceinline__ float Exp2FlushDenormals(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// softplus with PyTorch's threshold (linear above 20).
__device__ __forceinline__ float Softplus(float v) { return v <= 20.0f ? log1pf(expf(v)) : v; }

// kPass 0: the whole sequence in one chunk (h starts at 0), writing outputs.
// kPass 1: chunk-local scan from h = 0, writing only the end state and Σ Δ to the workspace.
// kPass 2: the chunk's start state is folded from the earlier chunks' workspace entries
//          (h ← exp(A·ΣΔ_j)·h + h_j, since Π_t exp(Δ_t·A) = exp(A·Σ_t Δ_t)), then outputs.
// Chunks and steps are numbered in scan order: step s is token t = s, or L−1−s when reverse.
template <typename T, int kN, int kPass>
__global__ void __launch_bounds__(kScanThreads) SelectiveScanKernel(ScanParams p) {
  static_assert(kChunk * kN % kScanThreads == 0, "B/C staging assumes whole rounds");
  __shared__ float smem_b[kChunk][kN];
  __shared__ float smem_c[kChunk][kN];

  const int batch = blockIdx.z;
  const int chunk = blockIdx.y;
  const int channel = blockIdx.x * kScanThreads + threadIdx.x;
  const bool active = channel < p.channels;
  const int chunk_len = (p.length + p.chunks - 1) / p.chunks;
  const int begin = chunk * chunk_len;
  const int end = min(p.length, begin + chunk_len);

  // __restrict__: `out` never aliases an input, so the compiler may issue the loads of later
  // steps before the store of an earlier one.
  const T* __restrict__ u = static_cast<const T*>(p.u.data) + batch * p.u.batch_stride + channel;
  const T* __restrict__ delta =
      static_cast<const T*>(p.delta.data) + batch * p.delta.batch_stride + channel;
  const T* __restrict__ z =
      p.z.data == nullptr ? nullptr
                          : static_cast<const T*>(p.z.data) + batch * p.z.batch_stride + channel;
  const T* __restrict__ b_base = static_cast<const T*>(p.B.data) + batch * p.B.batch_stride;
  const T* __restrict__ c_base = static_cast<const T*>(p.C.data) + batch * p.C.batch_stride;
  T* __restrict__ out =
      static_cast<T*>(p.out) + static_cast<int64_t>(batch) * p.length * p.channels + channel;
  const T* __restrict__ avg =
      p.average_with == nullptr
          ? nullptr
          : static_cast<const T*>(p.average_with) +
                static_cast<int64_t>(batch) * p.length * p.channels + channel;
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
      for (int n = 0; n < kN; ++n) h[n] = Exp2FlushDenormals(sum_dt * a2[n]) * h[n] + *ws(j, n);
    }
  }
  const float d_skip = (active && p.D != nullptr) ? p.D[channel] : 0.0f;
  const float bias = (active && p.delta_bias != nullptr) ? p.delta_bias[channel] : 0.0f;
  float sum_dt = 0.0f;

  for (int sub = begin; sub < end; sub += kChunk) {
    const int steps = min(kChunk, end - sub);
    __syncthreads();  // The previous sub-chunk's B/C are no longer read.
    // A fixed trip count, unrolled, so that all of a thread's loads are in flight at once.
#pragma unroll
    for (int r = 0; r < kChunk * kN / kScanThreads; ++r) {
      const int i = r * kScanThreads + threadIdx.x;
      const int s = i / kN, n = i % kN;
      if (s < steps) {
        const int t = p.reverse ? p.length - 1 - (sub + s) : sub + s;
        smem_b[s][n] = ToFloat(b_base[t * p.B.length_stride + n]);
        if (kPass != 1) smem_c[s][n] = ToFloat(c_base[t * p.C.length_stride + n]);
      }
    }
    __syncthreads();
    if (!active) continue;
    // Steps go in groups of kGroup: the group's loads of u, Δ, z (and average_with) are issued
    // together, so one global-memory latency is paid per group rather than per step. (Loading
    // the next group while computing this one was measured slower on the H100: 0.59 → 0.69 ms
    // per scan at batch 8 × 1248 px, from the extra registers.)
    for (int s0 = 0; s0 < steps; s0 += kGroup) {
      float u_g[kGroup], dt_g[kGroup], z_g[kGroup], avg_g[kGroup];
#pragma unroll
      for (int k = 0; k < kGroup; ++k) {
        if (s0 + k < steps) {
          const int t = p.reverse ? p.length - 1 - (sub + s0 + k) : sub + s0 + k;
          u_g[k] = ToFloat(u[t * p.u.length_stride]);
          dt_g[k] = ToFloat(delta[t * p.delta.length_stride]);
          z_g[k] = (kPass != 1 && z != nullptr) ? ToFloat(z[t * p.z.length_stride]) : 0.0f;
          avg_g[k] =
              (kPass != 1 && avg != nullptr) ? ToFloat(avg[int64_t{t} * p.channels]) : 0.0f;
        }
      }
#pragma unroll
      for (int k = 0; k < kGroup; ++k) {
        if (s0 + k >= steps) break;
        const int s = s0 + k;
        const float u_t = u_g[k];
        float dt = dt_g[k] + bias;
        if (p.delta_softplus) dt = Softplus(dt);
        const float dt_u = dt * u_t;
        if (kPass == 1) {
          sum_dt += dt;
#pragma unroll
          for (int n = 0; n < kN; ++n) {
            h[n] = Exp2FlushDenormals(dt * a2[n]) * h[n] + dt_u * smem_b[s][n];
          }
          continue;
        }
        // Four partial sums, so that y is not one chain of kN dependent FMAs.
        float y_part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < kN; ++n) {
          h[n] = Exp2FlushDenormals(dt * a2[n]) * h[n] + dt_u * smem_b[s][n];
          y_part[n % 4] += smem_c[s][n] * h[n];
        }
        float y = (y_part[0] + y_part[1]) + (y_part[2] + y_part[3]) + d_skip * u_t;
        if (z != nullptr) y *= Silu(z_g[k]);
        if (avg != nullptr) y = 0.5f * (avg_g[k] + y);
        const int t = p.reverse ? p.length - 1 - s - sub : sub + s;
        out[static_cast<int64_t>(t) * p.channels] = FromFloat<T>(y);
      }
    }
  }
  if (kPass == 1 && active) {
#pragma unroll
    for (int n = 0; n < kN; ++n) *ws(chunk, n) = h[n];
    *ws(chunk, kN) = sum_dt;
  }
}

// Warp scan: a block of kWarpScanWarps warps takes as many consecutive channels of one batch
// element, warp w the channel blockIdx.x·kWarpScanWarps + w. The sequence goes in tiles of
// kWarpScanTile steps (scan order); lane l owns the run of steps l·kItems … l·kItems + kItems − 1
// of a tile. Per tile the block stages u, Δ, z, average_with (its channels) and B, C (shared by
// the channels) in shared memory with coalesced loads, transposed so that a lane reads its run as
// vectors. Then, per state n, each lane computes its steps' a_i = exp(Δ_i·A_n) and
// b_i = Δ_i·u_i·B_i,n and composes them into the one affine map h ↦ a·h + b that its run applies;
// the warp combines the 32 maps with a Kogge–Stone scan (five shuffle rounds), from which lane l
// gets the state entering its run from the state carried over from the previous tile; the lane
// then walks its run again with the a_i, b_i it kept (no new exponentials), adding C_i,n·h_i to
// y_i. Outputs go back through shared memory to coalesced stores. Steps past the end are the
// identity map (a = 1, b = 0) and are not stored.
constexpr int kWarpScanWarps = 8;
constexpr int kWarpScanThreads = kWarpScanWarps * 32;
constexpr int kWarpScanItems = 8;
constexpr int kWarpScanTile = 32 * kWarpScanItems;
// Row stride of the staged tiles in floats: a multiple of 4 (float4 reads) and 4 more than the
// tile, so that the transposing stores of consecutive channels (or states) hit different banks.
constexpr int kWarpScanStride = kWarpScanTile + 4;

// Shared memory of one block: four per-channel tiles (u, Δ, z, average_with) and B, C.
constexpr size_t WarpScanSharedBytes(int d_state) {
  return sizeof(float) * kWarpScanStride * (4 * kWarpScanWarps + 2 * d_state);
}

// Reads kWarpScanItems consecutive floats (16-byte aligned) as two float4 loads.
__device__ __forceinline__ void LoadRun(const float* src, float (&dst)[kWarpScanItems]) {
  static_assert(kWarpScanItems == 8, "two float4 per run");
  const float4 lo = reinterpret_cast<const float4*>(src)[0];
  const float4 hi = reinterpret_cast<const float4*>(src)[1];
  dst[0] = lo.x, dst[1] = lo.y, dst[2] = lo.z, dst[3] = lo.w;
  dst[4] = hi.x, dst[5] = hi.y, dst[6] = hi.z, dst[7] = hi.w;
}

__device__ __forceinline__ void StoreRun(const float (&src)[kWarpScanItems], float* dst) {
  reinterpret_cast<float4*>(dst)[0] = make_float4(src[0], src[1], src[2], src[3]);
  reinterpret_cast<float4*>(dst)[1] = make_float4(src[4], src[5], src[6], src[7]);
}

template <typename T, int kN>
__global__ void __launch_bounds__(kWarpScanThreads, 3) WarpScanKernel(ScanParams p) {
  constexpr int kItems = kWarpScanItems;
  constexpr int kStride = kWarpScanStride;
  extern __shared__ float4 warp_scan_smem[];
  float* const s_u = reinterpret_cast<float*>(warp_scan_smem);
  float* const s_dt = s_u + kWarpScanWarps * kStride;
  float* const s_z = s_dt + kWarpScanWarps * kStride;
  float* const s_avg = s_z + kWarpScanWarps * kStride;
  float* const s_b = s_avg + kWarpScanWarps * kStride;
  float* const s_c = s_b + kN * kStride;

  const int batch = blockIdx.y;
  const int first_channel = blockIdx.x * kWarpScanWarps;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int channel = first_channel + warp;
  const bool active = channel < p.channels;
  const bool has_z = p.z.data != nullptr, has_avg = p.average_with != nullptr;

  const T* __restrict__ u = static_cast<const T*>(p.u.data) + batch * p.u.batch_stride;
  const T* __restrict__ delta = static_cast<const T*>(p.delta.data) + batch * p.delta.batch_stride;
  const T* __restrict__ z = has_z ? static_cast<const T*>(p.z.data) + batch * p.z.batch_stride
                                  : nullptr;
  const T* __restrict__ b_base = static_cast<const T*>(p.B.data) + batch * p.B.batch_stride;
  const T* __restrict__ c_base = static_cast<const T*>(p.C.data) + batch * p.C.batch_stride;
  const int64_t contiguous_batch = static_cast<int64_t>(batch) * p.length * p.channels;
  T* __restrict__ out = static_cast<T*>(p.out) + contiguous_batch;
  const T* __restrict__ avg =
      has_avg ? static_cast<const T*>(p.average_with) + contiguous_batch : nullptr;

  // Lane n holds state n's A·log2(e) (so that exp(Δ·A) = 2^(Δ·A')) and the state carried over
  // from the previous tiles; the state loop below fetches them by shuffles, since it is not
  // unrolled and register arrays indexed by n would spill.
  static_assert(kN <= 32, "a lane per state");
  const float lane_a2 = (active && lane < kN) ? p.A[channel * kN + lane] * kLog2e : 0.0f;
  float lane_carry = 0.0f;
  const float d_skip = (active && p.D != nullptr) ? p.D[channel] : 0.0f;
  const float bias = (active && p.delta_bias != nullptr) ? p.delta_bias[channel] : 0.0f;

  for (int tile = 0; tile < p.length; tile += kWarpScanTile) {
    __syncthreads();  // The previous tile's outputs have been stored.
    // Stage the block's channels: element e is (step e / warps, channel e % warps), so a warp's
    // loads cover four steps of eight adjacent channels.
#pragma unroll 2
    for (int e = threadIdx.x; e < kWarpScanTile * kWarpScanWarps; e += kWarpScanThreads) {
      const int s = e / kWarpScanWarps, c = e % kWarpScanWarps;
      const int step = tile + s;
      const bool valid = step < p.length && first_channel + c < p.channels;
      const int64_t t = p.reverse ? p.length - 1 - step : step;
      const int col = first_channel + c;
      const int at = c * kStride + s;
      s_u[at] = valid ? ToFloat(u[t * p.u.length_stride + col]) : 0.0f;
      s_dt[at] = valid ? ToFloat(delta[t * p.delta.length_stride + col]) : 0.0f;
      if (has_z) s_z[at] = valid ? ToFloat(z[t * p.z.length_stride + col]) : 0.0f;
      if (has_avg) s_avg[at] = valid ? ToFloat(avg[t * p.channels + col]) : 0.0f;
    }
    // B and C: element e is (step e / kN, state e % kN).
#pragma unroll 2
    for (int e = threadIdx.x; e < kWarpScanTile * kN; e += kWarpScanThreads) {
      const int s = e / kN, n = e % kN;
      const int step = tile + s;
      const bool valid = step < p.length;
      const int64_t t = p.reverse ? p.length - 1 - step : step;
      s_b[n * kStride + s] = valid ? ToFloat(b_base[t * p.B.length_stride + n]) : 0.0f;
      s_c[n * kStride + s] = valid ? ToFloat(c_base[t * p.C.length_stride + n]) : 0.0f;
    }
    __syncthreads();
    const int run = lane * kItems;  // this lane's first step within the tile
    // Warps past the last channel skip the arithmetic but still stage, store and synchronise.
    if (active) {
      float dt[kItems], dt_u[kItems], y[kItems];
      LoadRun(s_u + warp * kStride + run, dt_u);
      LoadRun(s_dt + warp * kStride + run, dt);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float u_i = dt_u[i];
        float dt_i = dt[i] + bias;
        if (p.delta_softplus) dt_i = Softplus(dt_i);
        dt[i] = tile + run + i < p.length ? dt_i : 0.0f;  // Δ = 0 and u = 0: the identity map
        dt_u[i] = dt[i] * u_i;
        y[i] = d_skip * u_i;
      }
#pragma unroll 1
      for (int n = 0; n < kN; ++n) {
        const float a2 = __shfl_sync(0xffffffffu, lane_a2, n);
        float a[kItems], b[kItems];
        LoadRun(s_b + n * kStride + run, b);
        // The run's map h ↦ run_a·h + run_b.
        float run_a = 1.0f, run_b = 0.0f;
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          a[i] = Exp2FlushDenormals(dt[i] * a2);
          b[i] *= dt_u[i];
          run_b = a[i] * run_b + b[i];
          run_a *= a[i];
        }
        // Inclusive scan over the lanes: lane l ends with the map of runs 0 … l.
#pragma unroll
        for (int offset = 1; offset < 32; offset *= 2) {
          const float prev_a = __shfl_up_sync(0xffffffffu, run_a, offset);
          const float prev_b = __shfl_up_sync(0xffffffffu, run_b, offset);
          if (lane >= offset) {
            run_b = run_a * prev_b + run_b;
            run_a *= prev_a;
          }
        }
        // The state entering this lane's run: runs 0 … l−1 applied to the carried state.
        const float before_a = __shfl_up_sync(0xffffffffu, run_a, 1);
        const float before_b = __shfl_up_sync(0xffffffffu, run_b, 1);
        const float carry = __shfl_sync(0xffffffffu, lane_carry, n);
        float h = lane == 0 ? carry : before_a * carry + before_b;
        const float total_a = __shfl_sync(0xffffffffu, run_a, 31);
        const float total_b = __shfl_sync(0xffffffffu, run_b, 31);
        if (lane == n) lane_carry = total_a * carry + total_b;
        float c[kItems];
        LoadRun(s_c + n * kStride + run, c);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          h = a[i] * h + b[i];
          y[i] += c[i] * h;
        }
      }
      if (has_z || has_avg) {
        float gate[kItems], other[kItems];
        if (has_z) LoadRun(s_z + warp * kStride + run, gate);
        if (has_avg) LoadRun(s_avg + warp * kStride + run, other);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          if (has_z) y[i] *= Silu(gate[i]);
          if (has_avg) y[i] = 0.5f * (other[i] + y[i]);
        }
      }
      // This lane read u at exactly these places, so no other lane needs them any more.
      StoreRun(y, s_u + warp * kStride + run);
    }
    __syncthreads();
#pragma unroll 2
    for (int e = threadIdx.x; e < kWarpScanTile * kWarpScanWarps; e += kWarpScanThreads) {
      const int s = e / kWarpScanWarps, c = e % kWarpScanWarps;
      const int step = tile + s;
      if (step >= p.length || first_channel + c >= p.channels) continue;
      const int64_t t = p.reverse ? p.length - 1 - step : step;
      out[t * p.channels + first_channel + c] = FromFloat<T>(s_u[c * kStride + s]);
    }
  }
}

// One thread per (channel, kConvSteps consecutive tokens); channels innermost, so neighbouring
// threads read neighbouring addresses. The thread loads the kConvSteps + kTaps − 1 inputs its
// outputs need once, into registers, instead of kTaps loads per output. Taps outside [0, L)
// are the conv's zero padding.
constexpr int kConvThreads = 128;
constexpr int kConvSteps = 16;

template <typename T, int kTaps>
__global__ void __launch_bounds__(kConvThreads) CausalConv1dSiluKernel(ConvParams p) {
  const int channel = blockIdx.x * kConvThreads + threadIdx.x;
  if (channel >= p.channels) return;
  const int batch = blockIdx.z;
  const int t0 = blockIdx.y * kConvSteps;
  const T* __restrict__ x = static_cast<const T*>(p.x.data) + batch * p.x.batch_stride + channel;
  T* __restrict__ out =
      static_cast<T*>(p.out) + static_cast<int64_t>(batch) * p.length * p.channels + channel;
  float w[kTaps];
#pragma unroll
  for (int k = 0; k < kTaps; ++k) w[k] = p.weight[channel * kTaps + k];
  const float bias = p.bias != nullptr ? p.bias[channel] : 0.0f;
  // window[j] holds token first + j: causal outputs t0… read t0−(K−1)…, anti-causal ones t0….
  constexpr int kWindow = kConvSteps + kTaps - 1;
  float window[kWindow];
  const int first = p.reverse ? t0 : t0 - (kTaps - 1);
#pragma unroll
  for (int j = 0; j < kWindow; ++j) {
    const int src = first + j;
    window[j] = (src >= 0 && src < p.length)
                    ? ToFloat(x[static_cast<int64_t>(src) * p.x.length_stride])
                    : 0.0f;
  }
#pragma unroll
  for (int i = 0; i < kConvSteps; ++i) {
    const int t = t0 + i;
    if (t >= p.length) break;
    float acc = bias;
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      // Causal: tap k reads token t−(K−1)+k; anti-causal: token t+(K−1)−k.
      acc += w[k] * (p.reverse ? window[i + (kTaps - 1) - k] : window[i + k]);
    }
    out[static_cast<int64_t>(t) * p.channels] = FromFloat<T>(Silu(acc));
  }
}

// One warp per row (token): residual_out = residual + hidden in fp32, then
// out = residual_out · rsqrt(mean(residual_out²) + eps) · weight in T. One pass over the row
// for the sum of squares, a second (from L1/L2) to scale.
template <typename T>
__global__ void AddRmsNormKernel(AddRmsNormParams p) {
  constexpr int kWarp = 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= p.rows) return;
  const T* __restrict__ hidden = static_cast<const T*>(p.hidden) + row * p.dim;
  // residual may be residual_out's buffer, so neither is __restrict__.
  const float* residual = p.residual == nullptr ? nullptr : p.residual + row * p.dim;
  float* residual_out = p.residual_out + row * p.dim;
  float sum_sq = 0.0f;
  for (int i = lane; i < p.dim; i += kWarp) {
    const float v = ToFloat(hidden[i]) + (residual != nullptr ? residual[i] : 0.0f);
    residual_out[i] = v;
    sum_sq += v * v;
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    sum_sq += __shfl_xor_sync(0xffffffffu, sum_sq, offset);
  }
  const float rstd = rsqrtf(sum_sq / static_cast<float>(p.dim) + p.eps);
  T* out = static_cast<T*>(p.out) + row * p.dim;
  for (int i = lane; i < p.dim; i += kWarp) {
    out[i] = FromFloat<T>(residual_out[i] * rstd * p.weight[i]);
  }
}

template <typename T, int kN>
cudaError_t LaunchWarpScan(const ScanParams& p, cudaStream_t stream) {
  constexpr size_t kShared = WarpScanSharedBytes(kN);
  // Above the 48 KiB a kernel gets by default. Set at every launch: the attribute belongs to the
  // current device's context, and setting it is a host-side call (allowed in graph capture).
  cudaError_t err = cudaFuncSetAttribute(WarpScanKernel<T, kN>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, kShared);
  if (err != cudaSuccess) return err;
  const dim3 grid((p.channels + kWarpScanWarps - 1) / kWarpScanWarps, p.batch);
  WarpScanKernel<T, kN><<<grid, kWarpScanThreads, kShared, stream>>>(p);
  return cudaGetLastError();
}

template <typename T, int kN>
cudaError_t LaunchScanState(const ScanParams& p, cudaStream_t stream) {
  if (p.kernel == ScanKernel::kWarpScan) return LaunchWarpScan<T, kN>(p, stream);
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

template <typename T, int kTaps>
cudaError_t LaunchConvTaps(const ConvParams& p, cudaStream_t stream) {
  const dim3 grid((p.channels + kConvThreads - 1) / kConvThreads,
                  (p.length + kConvSteps - 1) / kConvSteps, p.batch);
  CausalConv1dSiluKernel<T, kTaps><<<grid, kConvThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchConvTyped(const ConvParams& p, cudaStream_t stream) {
  switch (p.kernel) {
    case 1: return LaunchConvTaps<T, 1>(p, stream);
    case 2: return LaunchConvTaps<T, 2>(p, stream);
    case 3: return LaunchConvTaps<T, 3>(p, stream);
    case 4: return LaunchConvTaps<T, 4>(p, stream);
    case 5: return LaunchConvTaps<T, 5>(p, stream);
    case 6: return LaunchConvTaps<T, 6>(p, stream);
    case 7: return LaunchConvTaps<T, 7>(p, stream);
    case 8: return LaunchConvTaps<T, 8>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t LaunchAddRmsNormTyped(const AddRmsNormParams& p, cudaStream_t stream) {
  constexpr int kThreads = 256;
  constexpr int kRowsPerBlock = kThreads / 32;
  const int64_t blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  AddRmsNormKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
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
  if (params.kernel < 1 || params.kernel > 8 || params.batch > 65535 ||
      (params.length + kConvSteps - 1) / kConvSteps > 65535) {
    return cudaErrorInvalidValue;
  }
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

cudaError_t LaunchAddRmsNorm(const AddRmsNormParams& params, cudaStream_t stream) {
  if (params.rows == 0) return cudaSuccess;
  if (params.dim < 1) return cudaErrorInvalidValue;
  switch (params.dtype) {
    case ScanDtype::kFloat32:
      return LaunchAddRmsNormTyped<float>(params, stream);
    case ScanDtype::kFloat16:
      return LaunchAddRmsNormTyped<__half>(params, stream);
    case ScanDtype::kBFloat16:
      return LaunchAddRmsNormTyped<__nv_bfloat16>(params, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace vitserve::vim::internal
