// Launchers of the Fibottention CUDA kernels behind fibottention.h, with a plain C interface (raw
// device pointers, a dtype tag) so that the .cu files need no ATen headers. Used only by
// fibottention.cc in CUDA builds.
// Row-per-warp kernel (fibottention_cuda.cu; any d ≤ 256, fp32/fp16/bf16): q, k, v, out
// contiguous [B, H, T, d] of `dtype`; colsum fp32 [B, H, d] (Σ_t v, read only with the official
// semantics); index int64 [H, T, K] and count int64 [H, T] as in FibottentionPattern. One warp
// per query row, online softmax over its kept keys (the class row, count == T, walks every
// key), fp32 accumulation.
// Tiled and whole-head kernels (fibottention_tiled_cuda.cu; d = 64, fp16/bf16, 16-byte-aligned
// tensors): the same inputs, but keys from `shifts` (FibottentionPattern::shifts) instead of
// index/count, and colsum computed by the launch itself (the tiled kernel writes it into a
// caller-owned workspace).
// Thread-safety: asynchronous on `stream`. Errors: the returned cudaError_t
// (cudaErrorInvalidValue for d > 256, an unknown dtype, or a shape the tiled kernels lack).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>

namespace vitserve::fibottention::internal {

enum class FibDtype { kFloat32, kFloat16, kBFloat16 };

struct FibParams {
  int batch = 0;
  int heads = 0;
  int tokens = 0;
  int dim = 0;
  int width = 0;  // K
  FibDtype dtype = FibDtype::kFloat32;
  bool official = true;
  float scale = 1.f;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* colsum = nullptr;
  const int64_t* index = nullptr;
  const int64_t* count = nullptr;
  bool class_token = true;         // Token 0 is the class token (tiled kernels).
  const int32_t* shifts = nullptr;  // [H, shift_width] int32 (tiled kernels).
  int shift_width = 0;
  void* out = nullptr;
};

// Whether q, k, v and out all start on a 16-byte boundary (the kernels' vector loads and stores).
inline bool TensorsAligned16(const FibParams& params) {
  for (const void* ptr : {params.q, params.k, params.v, static_cast<const void*>(params.out)}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
  }
  return true;
}

cudaError_t LaunchFibottention(const FibParams& params, cudaStream_t stream);

// Shape of the tiled rows kernel: patch rows per block (64 or 128) and threads per row (1, or 2
// or 4 each holding a share of the channels); 0 picks by token count (TiledShapeFor).
struct TiledShape {
  int tile_queries = 0;
  int threads_per_row = 0;
};
TiledShape TiledShapeFor(int tokens, TiledShape requested);
bool TiledFibottentionSupports(const FibParams& params, TiledShape shape);
// How the tiled launch computes the class row and Σ_t v (the official semantics' column sum),
// which the patch rows need only when they write:
//  kBefore: a kernel of its own (one block per batch · head) before the patch rows' kernel.
//  kOverlapped: the same kernel, with the patch rows' kernel launched as its programmatic
//    dependent (compute capability 9.0 and above; kBefore elsewhere), so that it starts at once
//    and waits for the whole first grid only before writing its rows (same results).
//  kInTiles: no second kernel. Each block of the patch rows' kernel first computes a slice of
//    the next batch · head's class row and column sum (a share of its key and value rows); the
//    slice that completes a head merges the shares and publishes them, and the head's patch
//    rows, one grid row later, wait for that before writing. Blocks take their place in the
//    grid from a counter, so a block waits only on blocks that started before it.
enum class DenseRowSchedule { kBefore, kOverlapped, kInTiles };

// Floats of the caller-owned workspace the tiled launch needs (fp32 Σ_t v [B, H, 64], and with
// kInTiles the heads' slices and counters after it); the launch overwrites all of it.
int64_t TiledWorkspaceFloats(const FibParams& params, TiledShape shape,
                             DenseRowSchedule schedule);
cudaError_t LaunchTiledFibottention(const FibParams& params, TiledShape shape,
                                    DenseRowSchedule schedule, float* workspace,
                                    cudaStream_t stream);

// The tiled kernel's staging with the products on tensor cores (mma.sync, compute capability
// 8.0 and above): tile_queries (64 or 128; 0 picks 128) patch rows per block, 16 per warp.
// Same inputs and workspace as the tiled kernel.
bool MmaFibottentionSupports(const FibParams& params, int tile_queries);
cudaError_t LaunchMmaFibottention(const FibParams& params, int tile_queries,
                                  float* colsum_workspace, cudaStream_t stream);

// One block per (batch, head) with the whole sequence in shared memory: up to 320 tokens.
bool WholeHeadFibottentionSupports(const FibParams& params);
cudaError_t LaunchWholeHeadFibottention(const FibParams& params, cudaStream_t stream);

}  // namespace vitserve::fibottention::internal
