// Launchers of the CUDA kernels behind selective_scan.h, with a plain C interface (raw pointers,
// element strides, a dtype tag) so that selective_scan_cuda.cu needs no ATen headers and
// compiles quickly with nvcc. Used only by selective_scan.cc in CUDA builds.
// Contract: all pointers are device pointers on the current device; tensors of one call share
// `dtype` except the parameters (A or A_log, D, delta_bias; conv weight and bias; the norm's
// weight), which are contiguous and either fp32 or of `dtype`, as their flag says; the channel
// stride of every [B, L, D] tensor is 1; `out` is contiguous [B, L, D].
// Thread-safety: launches are asynchronous on `stream`. Errors: the returned cudaError_t
// (cudaErrorInvalidValue for an unsupported d_state or dtype).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vitserve::vim::internal {

enum class ScanDtype { kFloat32, kFloat16, kBFloat16 };

// A [batch, length, channels-or-state] operand: element strides of the batch and length axes.
struct Strided {
  const void* data = nullptr;
  int64_t batch_stride = 0;
  int64_t length_stride = 0;
};

// Which scan kernel runs (selective_scan_cuda.cu). All three are the chunked scan: a thread per
// (batch, channel, chunk of the sequence) walks its steps in groups of 8; with more than one
// chunk a first pass computes each chunk's end state and a second folds them in.
// kChunked: each step computes its own Δ and gate, between branches.
// kChunkedBranchFree: each group computes its Δ and gates first, then advances the state
//   through the group's steps with no branch in between (a partial group padded with Δ = 0).
// kSplitStates: kChunkedBranchFree with ScanLanesPerChannel(d_state) threads per channel, each
//   holding 4 of the states, so that as many times more threads scan the same chunks.
enum class ScanKernel { kChunked, kChunkedBranchFree, kSplitStates };

// Threads per channel of ScanKernel::kSplitStates: 4 states each (4, 2 or 1 thread).
constexpr int ScanLanesPerChannel(int d_state) { return d_state / 4 < 1 ? 1 : d_state / 4; }

struct ScanParams {
  ScanKernel kernel = ScanKernel::kChunked;
  int batch = 0;
  int length = 0;
  int channels = 0;
  int d_state = 0;  // 4, 8 or 16 (the kernel keeps the whole state in registers)
  ScanDtype dtype = ScanDtype::kFloat32;
  Strided u, delta, B, C, z;          // z.data may be null (no gate)
  // [channels, d_state]: A, or A_log when a_is_log (the kernel computes A = −exp(A_log)).
  const void* A = nullptr;
  bool a_is_log = false;
  const void* D = nullptr;           // [channels] or null
  const void* delta_bias = nullptr;  // [channels] or null
  bool params_fp32 = true;           // A, D and delta_bias: fp32, else all of `dtype`.
  bool delta_softplus = true;
  bool reverse = false;
  void* out = nullptr;  // [batch, length, channels]
  // Contiguous [batch, length, channels] of `dtype`, or null: out = (average_with + y) / 2.
  const void* average_with = nullptr;
  // Sequence chunks scanned in parallel (ScanChunks()); with more than one, `workspace` holds
  // ScanWorkspaceFloats() floats of device memory.
  int chunks = 1;
  float* workspace = nullptr;
};

// How many chunks to split the sequence into so that batch × channels × chunks threads fill
// the GPU (about 128k threads); 1 from 32k threads of batch × channels up. Chunks are ≥ 32 steps.
// For ScanKernel::kSplitStates pass channels × ScanLanesPerChannel(d_state) (its threads).
inline int ScanChunks(int batch, int channels, int length) {
  constexpr long kTargetThreads = 128 * 1024;
  const long threads = static_cast<long>(batch) * channels;
  // Chunking costs a second pass over the sequence, so it pays only when the GPU would
  // otherwise be mostly idle. Measured on an H100 (vim_tiny shapes, fp16): at 49k threads
  // (batch 128 × 384 channels) one chunk took 0.195 ms and three 0.330 ms; at 12k threads
  // (batch 32, 1025 tokens) the 11 chunks chosen here (0.385 ms) beat 1, 2, 4, …, 64 chunks.
  if (threads >= kTargetThreads / 4) return 1;
  long chunks = (kTargetThreads + threads - 1) / threads;
  const long max_chunks = (length + 31) / 32;
  if (chunks > max_chunks) chunks = max_chunks;
  return chunks < 1 ? 1 : static_cast<int>(chunks);
}

// Per (batch, chunk, channel): the chunk's local end state (d_state floats) and Σ Δ (1 float).
inline long ScanWorkspaceFloats(int batch, int channels, int d_state, int chunks) {
  return chunks <= 1 ? 0 : static_cast<long>(batch) * chunks * (d_state + 1) * channels;
}

struct ConvParams {
  int batch = 0;
  int length = 0;
  int channels = 0;
  int kernel = 0;  // 1..8
  ScanDtype dtype = ScanDtype::kFloat32;
  Strided x;
  const void* weight = nullptr;  // [channels, kernel]
  const void* bias = nullptr;    // [channels] or null
  bool params_fp32 = true;       // weight and bias: fp32, else both of `dtype`.
  bool reverse = false;
  void* out = nullptr;  // [batch, length, channels]
};

// Residual add + RMSNorm of a block (mamba_ssm's fused add_norm with residual_in_fp32):
// residual_out = residual + hidden (fp32), out = residual_out·rsqrt(mean(residual_out²)+eps)·weight.
// hidden/out are contiguous [rows, dim] of `dtype`; residual (or null: no residual yet) and
// residual_out are contiguous fp32 and may be the same buffer; weight is [dim], fp32 when
// weight_fp32, else of `dtype`.
struct AddRmsNormParams {
  int64_t rows = 0;
  int dim = 0;
  float eps = 1e-5f;
  ScanDtype dtype = ScanDtype::kFloat32;
  const void* hidden = nullptr;
  const float* residual = nullptr;
  float* residual_out = nullptr;
  const void* weight = nullptr;
  bool weight_fp32 = true;
  void* out = nullptr;
};

cudaError_t LaunchSelectiveScan(const ScanParams& params, cudaStream_t stream);
cudaError_t LaunchCausalConv1dSilu(const ConvParams& params, cudaStream_t stream);
cudaError_t LaunchAddRmsNorm(const AddRmsNormParams& params, cudaStream_t stream);

}  // namespace vitserve::vim::internal
