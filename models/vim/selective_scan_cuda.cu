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
#include "common/cuda_fast_math.cuh"
#include "models/vim/internal/scan_kernels.h"

namespace vitserve::vim::internal {
namespace {

constexpr int kScanThreads = 128;
constexpr int kChunk = 64;
constexpr int kGroup = 8;  // steps whose loads are issued together; divides kChunk

using cuda_dtypes::FromFloat;
using cuda_dtypes::ToFloat;
using cuda_fast_math::Exp2FlushDenormals;
using cuda_fast_math::kLog2e;

__device__ __forceinline__ float Silu(float v) { return v / (1.0f + expf(-v)); }

// SiLU without IEEE division's slow-path branch (and its call): __fdividef is the reciprocal and
// a multiply, within 2 ulp here. Where 1 + e^-v overflows (v < -88) it gives v·0 = -0, as the
// exact SiLU rounds to.
__device__ __forceinline__ float SiluNoBranch(float v) { return __fdividef(v, 1.0f + expf(-v)); }

// A per-channel parameter (A or A_log, D, Δ bias, conv weight and bias, norm weight): fp32, or
// T as the model stores it (no conversion kernel per call).
template <typename T>
__device__ __forceinline__ float LoadParam(const void* params, bool fp32, int64_t i) {
  return fp32 ? static_cast<const float*>(params)[i] : ToFloat(static_cast<const T*>(params)[i]);
}

// One step of a thread's kStates states: h ← exp(Δ·A)·h + Δ·u·B_t, with a2 = A·log2(e) and b
// the step's B_t (those states' entries).
template <int kStates>
__device__ __forceinline__ void AdvanceStates(float dt, float dt_u, const float* b,
                                              const float (&a2)[kStates], float (&h)[kStates]) {
#pragma unroll
  for (int n = 0; n < kStates; ++n) h[n] = Exp2FlushDenormals(dt * a2[n]) * h[n] + dt_u * b[n];
}

// The same step, returning C_t·h over the thread's states (c: C_t's entries), summed in four
// partial sums so that it is not one chain of kStates dependent FMAs.
template <int kStates>
__device__ __forceinline__ float AdvanceStatesAndRead(float dt, float dt_u, const float* b,
                                                      const float* c, const float (&a2)[kStates],
                                                      float (&h)[kStates]) {
  float y_part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int n = 0; n < kStates; ++n) {
    h[n] = Exp2FlushDenormals(dt * a2[n]) * h[n] + dt_u * b[n];
    y_part[n % 4] += c[n] * h[n];
  }
  return (y_part[0] + y_part[1]) + (y_part[2] + y_part[3]);
}

// softplus with PyTorch's threshold (linear above 20).
__device__ __forceinline__ float Softplus(float v) { return v <= 20.0f ? log1pf(expf(v)) : v; }

// softplus as Softplus, computed on both sides of the threshold and selected, so that a group's
// eight of them need no branch and overlap. NaN stays NaN (the comparison is false).
__device__ __forceinline__ float SoftplusNoBranch(float v) {
  const float below = log1pf(expf(fminf(v, 20.0f)));
  return v <= 20.0f ? below : v;
}

// Δ = softplus(δ + bias) (or δ + bias) of kCount steps in place, and with kGates their gates
// SiLU(z) (or 1 without z) in place. The flags are the same for every thread: one branch each
// around the steps, not one per step.
template <int kCount, bool kGates>
__device__ __forceinline__ void PrepareSteps(bool softplus, float bias, bool gated,
                                             float (&dt)[kCount], float (&gate)[kCount]) {
  if (softplus) {
#pragma unroll
    for (int k = 0; k < kCount; ++k) dt[k] = SoftplusNoBranch(dt[k] + bias);
  } else {
#pragma unroll
    for (int k = 0; k < kCount; ++k) dt[k] += bias;
  }
  if (!kGates) return;
  if (gated) {
#pragma unroll
    for (int k = 0; k < kCount; ++k) gate[k] = SiluNoBranch(gate[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kCount; ++k) gate[k] = 1.0f;
  }
}

// One group of kGroup steps of SelectiveScanKernel<T, kN, kPass, /*kBranchFree=*/true>, steps
// s0 … s0 + kGroup − 1 of the sub-chunk starting at step `sub`; those at or past `steps` are
// padding (u, Δ and z loaded as 0, B and C staged as 0) and leave the state unchanged. u_g,
// dt_g (raw δ), z_g and avg_g hold the group's loads; dt_g and z_g are overwritten.
template <typename T, int kN, int kPass>
__device__ __forceinline__ void AdvanceGroupBranchFree(
    const ScanParams& p, int s0, int steps, int sub, const float (&u_g)[kGroup],
    float (&dt_g)[kGroup], float (&z_g)[kGroup], const float (&avg_g)[kGroup], float bias,
    float d_skip, const float (&a2)[kN], float (&h)[kN], float& sum_dt,
    const float (&smem_b)[kChunk][kN], const float (&smem_c)[kChunk][kN], bool gated,
    bool averaged, T* __restrict__ out) {
  PrepareSteps<kGroup, kPass != 1>(p.delta_softplus, bias, gated, dt_g, z_g);
#pragma unroll
  for (int k = 0; k < kGroup; ++k) dt_g[k] = s0 + k < steps ? dt_g[k] : 0.0f;
  // The outputs are kept until the group's state work is done, so that their stores, which a
  // partial group skips, do not cut it into regions.
  float y_g[kGroup];
#pragma unroll
  for (int k = 0; k < kGroup; ++k) {
    const int s = s0 + k;
    const float dt = dt_g[k];
    const float dt_u = dt * u_g[k];
    if (kPass == 1) {
      sum_dt += dt;
      AdvanceStates(dt, dt_u, smem_b[s], a2, h);
      continue;
    }
    y_g[k] = AdvanceStatesAndRead(dt, dt_u, smem_b[s], smem_c[s], a2, h) + d_skip * u_g[k];
  }
  if constexpr (kPass != 1) {
    // (avg + y) / 2 when averaging and y otherwise: avg_g is 0 when not averaging.
    const float out_scale = averaged ? 0.5f : 1.0f;
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
      const int s = s0 + k;
      if (s >= steps) break;
      const int t = p.reverse ? p.length - 1 - s - sub : sub + s;
      out[static_cast<int64_t>(t) * p.channels] =
          FromFloat<T>(out_scale * (avg_g[k] + y_g[k] * z_g[k]));
    }
  }
}

// One group of kGroup steps of SelectiveScanKernel<T, kN, kPass, true, kLanes> with kLanes > 1
// threads per channel, each holding kN / kLanes of the states (from state n0). Each thread
// loads and prepares only its own steps of the group, k = i·kLanes + lane (Δ's softplus, Δ·u,
// the gate: computed once per step, not once per thread), and the group's threads exchange Δ
// and Δ·u by shuffles; every thread advances its states through all kGroup steps with no
// branch, the partial C·h sums are added across the group's threads, and each thread finishes
// and stores its own steps. Steps at or past `steps` are padding, as in AdvanceGroupBranchFree.
// u, delta, z and avg point at this channel (z and avg may be null).
template <typename T, int kN, int kPass, int kLanes>
__device__ __forceinline__ void AdvanceGroupSplit(
    const ScanParams& p, const T* __restrict__ u, const T* __restrict__ delta,
    const T* __restrict__ z, const T* __restrict__ avg, int s0, int steps, int sub, float bias,
    float d_skip, const float (&a2)[kN / kLanes], float (&h)[kN / kLanes], float& sum_dt,
    const float (&smem_b)[kChunk][kN], const float (&smem_c)[kChunk][kN], int lane,
    T* __restrict__ out) {
  constexpr int kStates = kN / kLanes;
  static_assert(kStates == 4, "a thread's states are read from shared memory as one float4");
  constexpr int kOwn = kGroup / kLanes;  // Steps of the group this thread prepares.
  // The channel's threads; all of them take the same path (one channel, one `active`).
  const unsigned mask = ((1u << kLanes) - 1) << ((threadIdx.x % 32) & ~(kLanes - 1u));
  float u_o[kOwn], dt_o[kOwn], dtu_o[kOwn], gate_o[kOwn], avg_o[kOwn];
#pragma unroll
  for (int i = 0; i < kOwn; ++i) {
    const int s = s0 + i * kLanes + lane;
    u_o[i] = dt_o[i] = gate_o[i] = avg_o[i] = 0.0f;
    if (s < steps) {
      const int t = p.reverse ? p.length - 1 - (sub + s) : sub + s;
      u_o[i] = ToFloat(u[t * p.u.length_stride]);
      dt_o[i] = ToFloat(delta[t * p.delta.length_stride]);
      if (kPass != 1 && z != nullptr) gate_o[i] = ToFloat(z[t * p.z.length_stride]);
      if (kPass != 1 && avg != nullptr) avg_o[i] = ToFloat(avg[int64_t{t} * p.channels]);
    }
  }
  PrepareSteps<kOwn, kPass != 1>(p.delta_softplus, bias, z != nullptr, dt_o, gate_o);
#pragma unroll
  for (int i = 0; i < kOwn; ++i) {
    if (s0 + i * kLanes + lane >= steps) dt_o[i] = 0.0f;
    dtu_o[i] = dt_o[i] * u_o[i];
  }
  float y_k[kGroup];
#pragma unroll
  for (int k = 0; k < kGroup; ++k) {
    const float dt = __shfl_sync(mask, dt_o[k / kLanes], k % kLanes, kLanes);
    const float dt_u = __shfl_sync(mask, dtu_o[k / kLanes], k % kLanes, kLanes);
    // This thread's 4 states of B_t and C_t: one 16-byte shared-memory load each.
    const float4 b = reinterpret_cast<const float4*>(smem_b[s0 + k])[lane];
    const float b_n[kStates] = {b.x, b.y, b.z, b.w};
    if (kPass == 1) {
      sum_dt += dt;
      AdvanceStates(dt, dt_u, b_n, a2, h);
      continue;
    }
    const float4 c = reinterpret_cast<const float4*>(smem_c[s0 + k])[lane];
    const float c_n[kStates] = {c.x, c.y, c.z, c.w};
    y_k[k] = AdvanceStatesAndRead(dt, dt_u, b_n, c_n, a2, h);
  }
  if constexpr (kPass != 1) {
#pragma unroll
    for (int k = 0; k < kGroup; ++k) {
#pragma unroll
      for (int offset = kLanes / 2; offset > 0; offset /= 2) {
        y_k[k] += __shfl_xor_sync(mask, y_k[k], offset, kLanes);
      }
    }
    const float out_scale = avg != nullptr ? 0.5f : 1.0f;
#pragma unroll
    for (int i = 0; i < kOwn; ++i) {
      const int s = s0 + i * kLanes + lane;
      if (s >= steps) break;
      float y = y_k[i * kLanes];  // This thread's step: selected, not indexed (registers).
#pragma unroll
      for (int j = 1; j < kLanes; ++j) y = lane == j ? y_k[i * kLanes + j] : y;
      y += d_skip * u_o[i];
      const int t = p.reverse ? p.length - 1 - s - sub : sub + s;
      out[static_cast<int64_t>(t) * p.channels] =
          FromFloat<T>(out_scale * (avg_o[i] + y * gate_o[i]));
    }
  }
}

// kPass 0: the whole sequence in one chunk (h starts at 0), writing outputs.
// kPass 1: chunk-local scan from h = 0, writing only the end state and Σ Δ to the workspace.
// kPass 2: the chunk's start state is folded from the earlier chunks' workspace entries
//          (h ← exp(A·ΣΔ_j)·h + h_j, since Π_t exp(Δ_t·A) = exp(A·Σ_t Δ_t)), then outputs.
// Chunks and steps are numbered in scan order: step s is token t = s, or L−1−s when reverse.
// kBranchFree (ScanKernel::kChunkedBranchFree): the same scan, but each group of kGroup steps
// first computes its Δ (bias + softplus) and gates, whose code branches (softplus's threshold,
// IEEE division's slow path), and then advances the state through all kGroup steps in one
// branch-free block, a partial group padded with Δ = 0 (the state stays as it is). In the plain
// kernel every step is a region of its own between those branches, so the compiler cannot
// overlap one step's exponentials with the next step's work (its SASS: three branches and a
// call per step). Its registers are capped at 128 (4 blocks per SM, as the plain kernel has;
// uncapped it took 146-148 and so 3 blocks), which costs a few spilled pointers, reloaded once
// per 64 steps. A minimum of 0 blocks leaves the plain kernel as it was.
// kLanes > 1 (ScanKernel::kSplitStates, with kBranchFree): kLanes threads per channel, each
// holding 4 of its states (AdvanceGroupSplit), so kLanes times the threads for the same
// sequence chunks: fewer chunks fill the GPU, and one chunk (no second pass) fills it sooner.
template <typename T, int kN, int kPass, bool kBranchFree, int kLanes = 1>
__global__ void __launch_bounds__(kScanThreads, kLanes > 1 ? 8 : kBranchFree ? 4 : 0)
    SelectiveScanKernel(ScanParams p) {
  static_assert(kChunk * kN % kScanThreads == 0, "B/C staging assumes whole rounds");
  static_assert(kLanes == 1 || kBranchFree, "states are split only in the branch-free loop");
  constexpr int kStates = kN / kLanes;  // Of each channel's kN, this thread's.
  __shared__ __align__(16) float smem_b[kChunk][kN];
  __shared__ __align__(16) float smem_c[kChunk][kN];

  const int batch = blockIdx.z;
  const int chunk = blockIdx.y;
  const int lane = kLanes == 1 ? 0 : static_cast<int>(threadIdx.x) % kLanes;
  const int n0 = lane * kStates;  // This thread's first state.
  const int channel = blockIdx.x * (kScanThreads / kLanes) + threadIdx.x / kLanes;
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
  float a2[kStates];
  float h[kStates];
#pragma unroll
  for (int n = 0; n < kStates; ++n) {
    float a = active ? LoadParam<T>(p.A, p.params_fp32, channel * kN + n0 + n) : 0.0f;
    if (p.a_is_log) a = -expf(a);  // A = −exp(A_log), in fp32.
    a2[n] = active ? a * kLog2e : 0.0f;
    h[n] = 0.0f;
  }
  if (kPass == 2 && active) {
    for (int j = 0; j < chunk; ++j) {
      const float sum_dt = *ws(j, kN);
#pragma unroll
      for (int n = 0; n < kStates; ++n) {
        h[n] = Exp2FlushDenormals(sum_dt * a2[n]) * h[n] + *ws(j, n0 + n);
      }
    }
  }
  const float d_skip =
      (active && p.D != nullptr) ? LoadParam<T>(p.D, p.params_fp32, channel) : 0.0f;
  const float bias = (active && p.delta_bias != nullptr)
                         ? LoadParam<T>(p.delta_bias, p.params_fp32, channel)
                         : 0.0f;
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
      } else if (kBranchFree) {
        // Padded steps read B and C too: zeros, so that Δ·u·B is 0 and not 0·(stale bits).
        smem_b[s][n] = 0.0f;
        if (kPass != 1) smem_c[s][n] = 0.0f;
      }
    }
    __syncthreads();
    if (!active) continue;
    // Steps go in groups of kGroup: the group's loads of u, Δ, z (and average_with) are issued
    // together, so one global-memory latency is paid per group rather than per step. (Loading
    // the next group while computing this one was measured slower on the H100: 0.59 → 0.69 ms
    // per scan at batch 8 × 1248 px, from the extra registers.)
    for (int s0 = 0; s0 < steps; s0 += kGroup) {
      if constexpr (kLanes > 1) {
        AdvanceGroupSplit<T, kN, kPass, kLanes>(p, u, delta, z, avg, s0, steps, sub, bias,
                                                d_skip, a2, h, sum_dt, smem_b, smem_c, lane, out);
      } else {
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
          } else if (kBranchFree) {
            u_g[k] = dt_g[k] = z_g[k] = avg_g[k] = 0.0f;
          }
        }
        if constexpr (kBranchFree) {
          AdvanceGroupBranchFree<T, kN, kPass>(p, s0, steps, sub, u_g, dt_g, z_g, avg_g, bias,
                                               d_skip, a2, h, sum_dt, smem_b, smem_c,
                                               z != nullptr, avg != nullptr, out);
        } else {
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
              AdvanceStates(dt, dt_u, smem_b[s], a2, h);
              continue;
            }
            float y = AdvanceStatesAndRead(dt, dt_u, smem_b[s], smem_c[s], a2, h) + d_skip * u_t;
            if (z != nullptr) y *= Silu(z_g[k]);
            if (avg != nullptr) y = 0.5f * (avg_g[k] + y);
            const int t = p.reverse ? p.length - 1 - s - sub : sub + s;
            out[static_cast<int64_t>(t) * p.channels] = FromFloat<T>(y);
          }
        }
      }
    }
  }
  if (kPass == 1 && active) {
#pragma unroll
    for (int n = 0; n < kStates; ++n) *ws(chunk, n0 + n) = h[n];
    if (lane == 0) *ws(chunk, kN) = sum_dt;  // The same on every thread of the channel.
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
  for (int k = 0; k < kTaps; ++k) w[k] = LoadParam<T>(p.weight, p.params_fp32, channel * kTaps + k);
  const float bias = p.bias != nullptr ? LoadParam<T>(p.bias, p.params_fp32, channel) : 0.0f;
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
    out[i] = FromFloat<T>(residual_out[i] * rstd * LoadParam<T>(p.weight, p.weight_fp32, i));
  }
}

template <typename T, int kN, bool kBranchFree, int kLanes = 1>
cudaError_t LaunchScanKernel(const ScanParams& p, cudaStream_t stream) {
  constexpr int kChannelsPerBlock = kScanThreads / kLanes;
  const dim3 grid((p.channels + kChannelsPerBlock - 1) / kChannelsPerBlock, p.chunks, p.batch);
  if (p.chunks <= 1) {
    SelectiveScanKernel<T, kN, 0, kBranchFree, kLanes><<<grid, kScanThreads, 0, stream>>>(p);
  } else {
    if (p.workspace == nullptr) return cudaErrorInvalidValue;
    SelectiveScanKernel<T, kN, 1, kBranchFree, kLanes><<<grid, kScanThreads, 0, stream>>>(p);
    SelectiveScanKernel<T, kN, 2, kBranchFree, kLanes><<<grid, kScanThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T, int kN>
cudaError_t LaunchScanState(const ScanParams& p, cudaStream_t stream) {
  switch (p.kernel) {
    case ScanKernel::kChunked:
      return LaunchScanKernel<T, kN, false>(p, stream);
    case ScanKernel::kChunkedBranchFree:
      return LaunchScanKernel<T, kN, true>(p, stream);
    case ScanKernel::kSplitStates:
      return LaunchScanKernel<T, kN, true, ScanLanesPerChannel(kN)>(p, stream);
  }
  return cudaErrorInvalidValue;
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
