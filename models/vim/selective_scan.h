// The custom operators of a Vision Mamba block. The two sequence operators of a Mamba mixer (Gu & Dao, arXiv 2312.00752, Sec. 3.2, Alg. 2) as
// Vision Mamba uses them (Zhu et al., arXiv 2401.09417, Sec. 3.2 and Alg. 1): the causal
// depthwise conv1d followed by SiLU, and the selective scan with the D skip and the SiLU(z) gate.
//
// Layout: token-major, as the surrounding Linear layers produce it. Every per-channel tensor is
// [batch, length, channels] with channels contiguous (stride 1) and any batch/length strides, so
// the x, z halves of in_proj's output and the dt, B, C slices of x_proj's output are passed as
// views without copies. B and C are [batch, length, d_state] (shared by all channels).
//
// Scan, per batch b, channel d, state n, with Δ_t = softplus(delta_t + delta_bias) (Eq. 4, ZOH
// for A, Euler for B as the reference implementation does):
//   h_t = exp(Δ_t·A[d,n])·h_{t−1} + Δ_t·B_t[n]·u_t,   h_{−1} = 0
//   y_t = Σ_n C_t[n]·h_t[n] + D[d]·u_t;   out_t = y_t·SiLU(z_t)
// State and accumulation are fp32 whatever the input dtype; the output has u's dtype.
// `reverse` runs the recurrence from the last token to the first (t = L−1 … 0). That equals
// flipping every input along the length, scanning forward and flipping the output back, which
// is how the official bidirectional ("bimamba v2") block runs its backward branch; here no
// flipped copies are made. Likewise CausalConv1dSilu(reverse) is the anti-causal conv that
// flip → causal conv → flip computes.
//
// Plus the block's fused residual add + RMSNorm (AddRmsNorm).
//
// Dispatch: CUDA tensors run the kernels of selective_scan_cuda.cu (when the build has CUDA; a
// CUDA tensor in a CPU-only build is an error), CPU tensors the readable reference loops below.
// Forward only (inference): no autograd graph is recorded.
// Thread-safety: pure functions. Errors: c10::Error (TORCH_CHECK) on mismatched shapes, devices
// or unsupported dtypes (fp32, fp16, bf16 are supported).
#pragma once

#include <ATen/ATen.h>

namespace vitserve::vim {

// CUDA only: which kernel runs the scan (selective_scan_cuda.cu; all are the chunked scan, and
// the result does not depend on the choice beyond rounding). kChunked computes each step's Δ
// (softplus) and gate between the step's state updates; kChunkedBranchFree computes them for a
// group of 8 steps first and then advances the state through the group with no branch, so that
// the compiler can overlap the steps; kSplitStates is kChunkedBranchFree with the 16 states
// of a channel split over 4 threads (d_state 8: 2), which fill the GPU with fewer chunks.
// kAuto is kSplitStates: on the H200 (run J, docs/performance.md) it took 0.443 ms per scan at
// batch 8 x 1248 px and 0.151 at 128 x 224 px, against 0.550 / 0.191 (kChunked) and 0.526 /
// 0.184 (kChunkedBranchFree).
enum class ScanKernelChoice { kAuto, kChunked, kChunkedBranchFree, kSplitStates };

struct SelectiveScanInputs {
  at::Tensor u;           // [B, L, D] (the conv output), fp32/fp16/bf16
  at::Tensor delta;       // [B, L, D] before bias and softplus, any supported dtype
  at::Tensor A;           // [D, N] (= −exp(A_log)), or undefined when A_log is given
  at::Tensor A_log;       // [D, N], or undefined: A = −exp(A_log), computed in fp32 (on CUDA
                          // inside the kernel, so the model passes its parameter as stored)
  at::Tensor B;           // [B, L, N]
  at::Tensor C;           // [B, L, N]
  at::Tensor D;           // [D], or undefined (no skip)
  at::Tensor z;           // [B, L, D] gate, or undefined (no gating)
  at::Tensor delta_bias;  // [D], or undefined
  // A (or A_log), D and delta_bias may be fp32 or u's dtype; the CUDA kernel reads them as they
  // are when all are one of the two (any other mix is converted to fp32 first).
  bool delta_softplus = true;
  bool reverse = false;
  // CUDA only: sequence chunks scanned in parallel (selective_scan_cuda.cu); 0 lets the kernel
  // pick from the GPU fill (internal::ScanChunks). The result does not depend on it beyond
  // rounding. Benchmarks set it to compare choices.
  int chunks = 0;
  ScanKernelChoice kernel = ScanKernelChoice::kAuto;
  // Optional [B, L, D] in u's dtype: the result is (average_with + y) / 2, computed in fp32
  // before rounding. Bimamba v2 averages its two directions this way; passing the forward
  // output to the backward scan saves a pass over both.
  at::Tensor average_with;
};

// Returns out [B, L, D] contiguous, in u's dtype, on u's device.
at::Tensor SelectiveScan(const SelectiveScanInputs& in);

// x [B, L, D]; weight [D, 1, K] or [D, K]; bias [D] or undefined (on CUDA read as stored when
// both are fp32 or x's dtype, else converted to fp32). Returns SiLU(conv(x)) as
// [B, L, D] contiguous in x's dtype: out_t = SiLU(bias + Σ_k w[k]·x_{t−(K−1)+k}) (zero padding
// before the start), or with reverse, out_t = SiLU(bias + Σ_k w[k]·x_{t+(K−1)−k}).
at::Tensor CausalConv1dSilu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                            bool reverse);

// The input of a Vim block (mamba_ssm's fused add + RMSNorm with residual_in_fp32):
//   residual ← residual + hidden in fp32 (just hidden when residual is undefined),
//   returns residual · rsqrt(mean(residual²) + eps) · weight, in hidden's dtype.
// hidden [..., D]; weight [D] (on CUDA read as stored when fp32 or hidden's dtype); residual
// undefined or fp32 of hidden's shape. `residual` is
// replaced by a new fp32 tensor (the one passed in is not written).
at::Tensor AddRmsNorm(const at::Tensor& hidden, at::Tensor& residual, const at::Tensor& weight,
                      double eps);

// The CPU reference implementations, callable directly (tests compare the kernels with them).
// They accept CPU tensors only.
at::Tensor SelectiveScanReference(const SelectiveScanInputs& in);
at::Tensor CausalConv1dSiluReference(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias, bool reverse);
// Tensor-op composition; runs on any device.
at::Tensor AddRmsNormReference(const at::Tensor& hidden, at::Tensor& residual,
                               const at::Tensor& weight, double eps);

// True when this build contains the CUDA kernels.
bool HasCudaKernels();

}  // namespace vitserve::vim
