// Fibottention (Rahimian et al., arXiv 2406.19391, Sec. 3; official code
// Charlotte-CharMLab/Fibottention fibottention.py and image_classification/vision_transformer.py):
// per-head dilated attention masks from Wythoff pairs and Fibonacci-like sequences, and an
// attention kernel that evaluates only the kept query-key pairs.
//
// Mask (generate_head_indices / get_fibonacci / get_mask_attn_wythoff), N patch tokens, h heads,
// φ = (1+√5)/2, head i = 1..h:
//   a_i = ⌊⌊iφ⌋φ⌋,  b_i = ⌊⌊iφ⌋φ²⌋,  w_i = w_min + int((w_max − w_min)/(h − 1)·(i − 1)),
//   w_min = 5, w_max = N // 3;  offsets_i = [a_i, b_i, a_i+b_i, …] while the last is ≤ w_i, with
//   the last element dropped (so the list ends with the first term > w_i removed);
//   Θ_i[j, j ± o] = 1 for each offset o on the flattened patch order (no self diagonal); the
//   class token's row and column are all ones. "Modified" Wythoff uses (a − (b − a), b − a).
// The heads' offset lists are permuted per layer exactly as Python's `random.seed(depth);
// random.shuffle(list)` (CPython's MT19937 reimplemented here). The released code's global mask
// cache makes every layer use the depth-0 permutation; FibottentionConfig can reproduce that.
//
// Semantics: kOfficial — the mask MULTIPLIES the scaled logits, so masked pairs have logit 0 and
// still take softmax weight exp(0)·v_j; kNegInf — masked pairs are removed (−∞ logits). The
// kernel is exact for both: per query row with kept set K (|K| = c of T keys),
//   official: m = max(max_K s_j, 0),  out = (Σ_K e^{s_j−m} v_j + e^{−m}(Σ_all v − Σ_K v))
//                                             / (Σ_K e^{s_j−m} + (T − c) e^{−m})
//   −∞:       m = max_K s_j,          out = Σ_K e^{s_j−m} v_j / Σ_K e^{s_j−m}.
// Thread-safety: free functions without state; FibottentionPattern is immutable after creation.
// Errors: c10::Error (TORCH_CHECK) on inconsistent shapes or arguments.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace vitserve {

enum class FibottentionSemantics { kOfficial, kNegInf };

// Unpermuted per-head offsets (generate_head_indices), heads ≥ 1.
std::vector<std::vector<int64_t>> FibottentionHeadOffsets(int64_t patch_tokens, int64_t heads,
                                                          int64_t wmin = 5, bool modified = false);

// Python's `random.seed(seed); x = list(range(n)); random.shuffle(x)`; x is returned.
std::vector<int64_t> PythonShuffledRange(int64_t n, int64_t seed);

// Offsets of each head of layer `depth_id` after the official per-layer shuffle.
std::vector<std::vector<int64_t>> FibottentionLayerOffsets(int64_t patch_tokens, int64_t heads,
                                                           int64_t depth_id, int64_t wmin = 5,
                                                           bool modified = false);

// The dense 0/1 mask [heads, T, T] (float), T = patch_tokens + 1 with the class token first
// (get_mask_attn_wythoff with add_class_token=True), or [heads, N, N] without a class token.
at::Tensor FibottentionDenseMask(const std::vector<std::vector<int64_t>>& head_offsets,
                                 int64_t patch_tokens, bool class_token = true);

// Kept keys of every query row, as padded index lists: index [H, T, K] (int64, key positions),
// count [H, T] (int64, number of valid entries of each row). Built from the offsets directly, in
// O(H·T·K) (never a dense T×T mask). Rows list their keys in increasing order.
// The same keys as shifts: patch row t of head h keeps the class token (when there is one) and
// every t + shifts[h][j] that is a patch position, [class_token ? 1 : 0, T). shifts holds each
// head's distinct ±offsets in increasing order, padded at the end with kShiftPadding (a key far
// past any T); the tiled CUDA kernel reads them instead of the index lists.
struct FibottentionPattern {
  static constexpr int32_t kShiftPadding = 1 << 29;
  int64_t heads = 0;
  int64_t tokens = 0;       // T, class token included when class_token.
  bool class_token = true;  // Row 0 then attends to every key (count T; its index row unused).
  at::Tensor index;         // [H, T, K] int64, padding entries hold 0.
  at::Tensor count;         // [H, T] int64.
  at::Tensor shifts;        // [H, S] int32.
};
FibottentionPattern MakeFibottentionPattern(const std::vector<std::vector<int64_t>>& head_offsets,
                                            int64_t patch_tokens, bool class_token = true);
// The same pattern with index and count on `device`.
FibottentionPattern PatternTo(const FibottentionPattern& pattern, const at::Device& device);

// Sparse attention over the kept pairs. q, k, v: [B, H, T, d]; returns [B, H, T, d] in q's
// dtype. Dispatch: CPU float32 → a fused C++ loop kernel (at::parallel_for over batch × head);
// CUDA with VITSERVE_WITH_CUDA → the CUDA kernels (FibottentionCudaOptions' kAuto); anything
// else → a device-generic gather formulation in ATen ops (also exact). The pattern may live on
// any device; it is moved when needed.
at::Tensor FibottentionAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const FibottentionPattern& pattern,
                                 FibottentionSemantics semantics, double scale);

// The implementations behind FibottentionAttention, exposed for tests and benchmarks.
at::Tensor FibottentionAttentionCpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const FibottentionPattern& pattern,
                                    FibottentionSemantics semantics, double scale);
at::Tensor FibottentionAttentionGather(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const FibottentionPattern& pattern,
                                       FibottentionSemantics semantics, double scale);
// Which CUDA kernel runs. kAuto: the whole-head kernel where it applies, else the tiled kernel
// where it applies, else the row-per-warp kernel (any head dim ≤ 256, fp32/fp16/bf16). Both
// faster kernels need head dim 64, fp16/bf16, 16-byte-aligned contiguous tensors and at most
// 128 shifts per head; the whole-head kernel (one block per batch × head, the whole sequence
// in shared memory) at most 320 tokens, the tiled kernel at most 65,535 batch × heads.
// kTiled / kWholeHead fail (c10::Error) where that kernel does not apply. tile_queries (64 or
// 128 patch rows per block) and threads_per_row (1, 2 or 4) shape the tiled kernel; 0 picks by
// token count (64 × 4 up to 1,024 tokens, else 128 × 1). kTensorCore: the tiled kernel's
// staging with the products on tensor cores (mma.sync; the tiled kernel's requirements and a
// GPU of compute capability 8.0 or above), tile_queries 64 or 128 rows per block (0: 128),
// threads_per_row 0; asked for by name only: its first version was slower than the tiled
// kernel on the H200 (0.39 against 0.28 ms at 785 tokens, docs/performance.md run I), and its
// rewrite is not yet measured, so kAuto does not pick it.
// overlap_dense_row (tiled and tensor-core kernels, compute capability 9.0 and above; ignored
// elsewhere): the patch rows' kernel starts while the class row / column sum kernel before it
// still runs (programmatic dependent launch) and waits for it only before writing its rows;
// the same results. On by default: on the H200 (run J, docs/performance.md) it took 1-3% off
// the tiled kernel's time at 785 and 3,137 tokens.
struct FibottentionCudaOptions {
  enum class Kernel { kAuto, kRowPerWarp, kTiled, kWholeHead, kTensorCore };
  Kernel kernel = Kernel::kAuto;
  int tile_queries = 0;
  int threads_per_row = 0;
  bool overlap_dense_row = true;
};
at::Tensor FibottentionAttentionCuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const FibottentionPattern& pattern,
                                     FibottentionSemantics semantics, double scale,
                                     const FibottentionCudaOptions& options = {});
// (In a build without CUDA it throws c10::Error.)

// Test reference only: dense masked attention, mask [H, T, T] (0/1), as the official code
// computes it (logits × mask, or −∞ where the mask is 0), in float32.
at::Tensor DenseMaskedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& mask, FibottentionSemantics semantics,
                                double scale);

}  // namespace vitserve
