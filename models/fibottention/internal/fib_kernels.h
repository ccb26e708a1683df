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
// `colsum_workspace`: fp32 [B, H, 64], overwritten (Σ_t v with the official semantics).
// overlap_dense_row: on a GPU of compute capability 9.0 or above, the patch rows' kernel is a
// programmatic dependent launch of the class row / column sum kernel before it, so the two run
// side by side and the patch rows wait for Σ_t v only before writing (same results).
cudaError_t LaunchTiledFibottention(const FibParams& params, TiledShape shape,
                                    bool overlap_dense_row, float* colsum_workspace,
                                    cudaStream_t stream);

// The tiled kernel's staging with the products on tensor cores (mma.sync, compute capability
// 8.0 and above): tile_queries (64 or 128; 0 picks 128) patch rows per block, 16 per warp.
// Same inputs, workspace and overlap_dense_row as the tiled kernel.
bool MmaFibottentionSupports(const FibParams& params, int tile_queries);
cudaError_t LaunchMmaFibottention(const FibParams& params, int tile_queries,
                                  bool overlap_dense_row, float* colsum_workspace,
                                  cudaStream_t stream);

// One block per (batch, head) with the whole sequence in shared memory: up to 320 tokens.
bool WholeHeadFibottentionSupports(const FibParams& params);
cudaError_t LaunchWholeHeadFibottention(const FibParams& params, cudaStream_t stream);

}  // namespace vitserve::fibottention::internal
