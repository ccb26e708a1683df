// Tiled CUDA kernels of FibottentionAttention (fibottention.h) for head dim 64 in fp16/bf16, the
// head shape of every ViT that Fibottention is trained with (ViT-T/S/B/L).
//
// Why: the row-per-warp kernel (fibottention_cuda.cu) reads each kept key and value row from L2
// once per query that keeps it (about 10 queries per row at 785 tokens, 15 at 3,137), loads
// each key only after the previous one's softmax step, and walks the class row's T keys in one
// warp, which becomes the tail of the launch (0.33x / 0.53x / 1.27x SDPA at 197 / 785 / 3,137
// tokens on the H200; docs/performance.md has this file's numbers). Here:
//  1. TiledRowsKernel, one block per (tile of patch rows, batch, head), one, two or four threads
//     per row: a head keeps, for patch row t, the keys t + s of a fixed sorted list of signed
//     shifts s (plus the class token), so a tile's keys are the union of tile-long ranges, one per
//     shift. One warp merges that union into segments (MergeKeyRanges); the block walks them in
//     increasing order, stages each chunk of key and value rows in shared memory (cp.async,
//     every copy of a chunk in flight at once), and every row takes its keys that lie in the
//     chunk. A key row then comes from L2 once per tile rather than once per query (at 785
//     tokens and 128 rows per tile, 2.7 loads per row instead of about 10).
//  2. DenseRowKernel, before it, one block per (batch, head): the class row's dense attention,
//     its keys split over lane groups and merged in shared memory, and Σ_t v (the official
//     semantics' column sum) from the same pass over V.
//  3. WholeHeadKernel, instead of both for sequences of at most 320 tokens (ViT at 224 px has
//     197): one block per (batch, head) stages every key and value row once and computes Σ_t v,
//     the class row and the patch rows from shared memory, in one launch.
//  4. MmaRowsKernel (asked for by name), in place of TiledRowsKernel: the same staging, with
//     q·k and P V computed on tensor cores (see its comment). Its first version was slower
//     than TiledRowsKernel (docs/performance.md, run I); the rewrite with ldmatrix is not yet
//     measured on a GPU (docs/performance.md, "Built after run W").
// The official semantics stay exact with a single accumulator (PatchRow): every one of the T
// keys is first counted with logit 0 (e^{-m} · Σ_t v and T · e^{-m}, added at the end) and each
// kept key adds e^{s-m} - e^{-m}, a term that rescales like any other when the running max m
// grows (m starts at 0, the masked keys' logit).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline_primitives.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cuda_dtypes.cuh"
#include "common/cuda_fast_math.cuh"
#include "models/fibottention/internal/fib_kernels.h"

namespace vitserve::fibottention::internal {
namespace {

constexpr int kDim = 64;
// DenseRowKernel: groups of kLanes lanes, each lane 8 channels (16 bytes of fp16/bf16) of a key.
constexpr int kLanes = 8;
constexpr int kDenseRowThreads = 128;  // 6 blocks per SM: one wave for 768 (batch, head) pairs.
constexpr int kGroups = kDenseRowThreads / kLanes;  // Keys in flight per block.
constexpr int kRowVectors = kDim / 8;       // 16-byte vectors per key row.
constexpr int kMaxShifts = 128;
constexpr int kMaxBlocksY = 65535;  // (batch, head) pairs are the tiled kernel's grid.y.

using cuda_dtypes::FromFloat;
using cuda_dtypes::FromFloat2;
using cuda_dtypes::PairOf;
using cuda_dtypes::ToFloat;
using cuda_dtypes::UnpackEight;
using cuda_fast_math::ExpFlushDenormals;

template <typename T>
__device__ __forceinline__ uint4 Pack(const float (&in)[8]) {
  uint4 raw;
  auto* pairs = reinterpret_cast<typename PairOf<T>::Type*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) pairs[j] = FromFloat2<T>(make_float2(in[2 * j], in[2 * j + 1]));
  return raw;
}

// Programmatic dependent launch (compute capability 9.0; no-ops below it and when the grid was
// launched without it). DenseRowKernel lets the tiled kernel after it start at once; the tiled
// kernel waits for DenseRowKernel's grid (its Σ_t v) only before it writes its rows.
__device__ __forceinline__ void LetDependentGridStart() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void WaitForPrerequisiteGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The lanes of this thread's 8-lane group: shuffles inside a group stay legal while the
// warp's groups take different branches (each group's lanes always agree).
__device__ __forceinline__ unsigned GroupMask() { return 0xffu << ((threadIdx.x % 32) & ~7u); }

// q · k over the group's 64 channels, on every lane of the group.
__device__ __forceinline__ float GroupDot(const float (&q)[8], const float (&k)[8],
                                          unsigned mask) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += q[i] * k[i];
  s += __shfl_xor_sync(mask, s, 4);
  s += __shfl_xor_sync(mask, s, 2);
  s += __shfl_xor_sync(mask, s, 1);
  return s;
}

// Online-softmax state of the class row on one lane of a group: running max, denominator, and
// the lane's 8 channels.
struct DenseRowState {
  float m = -INFINITY;
  float l = 0.f;
  float acc[8] = {};
};

// Adds one key (logit s, the lane's slice v of its value row).
__device__ __forceinline__ void AddDenseKey(DenseRowState& st, float s, const float (&v)[8]) {
  const float m_new = fmaxf(st.m, s);
  const float correction = st.m == -INFINITY ? 0.f : ExpFlushDenormals(st.m - m_new);
  const float w = ExpFlushDenormals(s - m_new);
  st.l = st.l * correction + w;
#pragma unroll
  for (int i = 0; i < 8; ++i) st.acc[i] = st.acc[i] * correction + w * v[i];
  st.m = m_new;
}

template <typename T>
__device__ __forceinline__ void LoadQuery(const T* row, int sub, float scale, float (&q)[8]) {
  UnpackEight<T>(reinterpret_cast<const uint4*>(row)[sub], q);
#pragma unroll
  for (int i = 0; i < 8; ++i) q[i] *= scale;
}

// One block per (batch, head): the class row over every key (class_row) and Σ_t v
// (column_sum, into colsum [B·H, 64]). Its register count matters: at 80 registers (sm_90) six
// blocks fit per SM, so ViT-B's 768 heads at batch 64 take one wave on an H100 or H200. A
// variant at 86 registers (five per SM, two waves) measured the default 64 x 4 path 14% slower,
// likely for that reason (docs/performance.md, run S). These blocks fill the SMs' registers
// while they run, so the overlapped rows kernel starts only as they finish.
template <typename T>
__global__ void __launch_bounds__(kDenseRowThreads)
    DenseRowKernel(FibParams p, float* colsum, bool class_row, bool column_sum) {
  LetDependentGridStart();
  const long bh = blockIdx.x;
  const int group = threadIdx.x / kLanes, sub = threadIdx.x % kLanes;
  const unsigned mask = GroupMask();
  const long head_offset = bh * p.tokens * kDim;
  const auto* k = reinterpret_cast<const uint4*>(static_cast<const T*>(p.k) + head_offset);
  const auto* v = reinterpret_cast<const uint4*>(static_cast<const T*>(p.v) + head_offset);
  float q[8] = {};
  if (class_row) LoadQuery(static_cast<const T*>(p.q) + head_offset, sub, p.scale, q);
  DenseRowState st;  // The class row keeps every key: plain softmax.
  float col[8] = {};
  // kBatch keys per group at a time, all their loads issued before the first is used: one
  // memory latency per kBatch keys rather than per key.
  constexpr int kBatch = 4;
  for (int j0 = group; j0 < p.tokens; j0 += kGroups * kBatch) {
    uint4 key_raw[kBatch], value_raw[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int j = j0 + b * kGroups;
      if (j >= p.tokens) break;
      value_raw[b] = v[j * kRowVectors + sub];
      if (class_row) key_raw[b] = k[j * kRowVectors + sub];
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      if (j0 + b * kGroups >= p.tokens) break;
      float vv[8];
      UnpackEight<T>(value_raw[b], vv);
      if (column_sum) {
#pragma unroll
        for (int i = 0; i < 8; ++i) col[i] += vv[i];
      }
      if (class_row) {
        float kk[8];
        UnpackEight<T>(key_raw[b], kk);
        AddDenseKey(st, GroupDot(q, kk, mask), vv);
      }
    }
  }
  __shared__ float group_m[kGroups], group_l[kGroups];
  __shared__ float group_acc[kGroups][kDim], group_col[kGroups][kDim];
  if (sub == 0) {
    group_m[group] = st.m;
    group_l[group] = st.l;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    group_acc[group][sub * 8 + i] = st.acc[i];
    group_col[group][sub * 8 + i] = col[i];
  }
  __syncthreads();
  if (threadIdx.x >= kDim) return;
  const int e = threadIdx.x;
  if (column_sum) {
    float c = 0.f;
    for (int g = 0; g < kGroups; ++g) c += group_col[g][e];
    colsum[bh * kDim + e] = c;
  }
  if (class_row) {
    float m = -INFINITY;
    for (int g = 0; g < kGroups; ++g) m = fmaxf(m, group_m[g]);
    float l = 0.f, a = 0.f;
    for (int g = 0; g < kGroups; ++g) {
      const float w = group_m[g] == -INFINITY ? 0.f : ExpFlushDenormals(group_m[g] - m);
      l += group_l[g] * w;
      a += group_acc[g][e] * w;
    }
    static_cast<T*>(p.out)[head_offset + e] = FromFloat<T>(a / l);
  }
}

// Staged key and value rows in shared memory are kPaddedRow 16-byte vectors apart (one more
// than a row needs): the lanes of a warp read the same vector of consecutive rows, and the
// padding spreads those reads over all banks.
constexpr int kPaddedRow = kRowVectors + 1;
// A new running max rescales the accumulator only when it exceeds the current one by more than
// this (weights up to e^8 are safe in fp32): most keys then skip the 64 multiplications.
constexpr float kRescaleSlack = 8.f;

// One patch row's online softmax on one of its kSplit threads (1, 2 or 4), which holds kDim /
// kSplit channels of the query (scaled) and of the accumulator in registers, so that a key is
// independent multiply-adds (plus one or two shuffles when split). Official semantics: the
// running max starts at 0 (the masked keys' logit), each kept key's weight gives back e^{-m},
// and Finish counts all T keys with logit 0 (T · e^{-m}, e^{-m} · Σ_t v).
template <typename T, int kSplit>
struct PatchRow {
  static constexpr int kChannels = kDim / kSplit;
  static constexpr int kVectors = kChannels / 8;  // 16-byte vectors per thread and row.
  int part;       // Which kVectors of each row this thread holds.
  unsigned mask;  // The row's threads (always on one path, so a shuffle among them is legal).
  float q[kChannels];
  float acc[kChannels];
  float m;
  float masked_weight;  // e^{-m} with the official semantics, else 0.
  float l;

  // query_row: the row's 16-byte vectors, or nullptr for a row past the end (no loads).
  __device__ __forceinline__ void Start(const uint4* query_row, float scale, bool official) {
    uint4 vectors[kVectors] = {};
    if (query_row != nullptr) LoadQueryVectors(query_row, vectors);
    Start(vectors, query_row != nullptr, scale, official);
  }

  // This thread's vectors of the query row (Start's), for a caller that issues the loads early
  // and starts the row later, so that other work covers their latency.
  __device__ __forceinline__ static void LoadQueryVectors(const uint4* query_row,
                                                          uint4 (&vectors)[kVectors]) {
    const int thread_part = static_cast<int>(threadIdx.x) % kSplit;
#pragma unroll
    for (int c = 0; c < kVectors; ++c) vectors[c] = query_row[thread_part * kVectors + c];
  }

  // Start from loaded vectors (LoadQueryVectors); valid false: a row past the end.
  __device__ __forceinline__ void Start(const uint4 (&vectors)[kVectors], bool valid, float scale,
                                        bool official) {
    part = static_cast<int>(threadIdx.x) % kSplit;
    mask = kSplit == 1 ? 0xffffffffu
                       : ((1u << kSplit) - 1) << ((threadIdx.x % 32) & ~(kSplit - 1u));
    m = official ? 0.f : -INFINITY;
    masked_weight = official ? 1.f : 0.f;
    l = 0.f;
#pragma unroll
    for (int i = 0; i < kChannels; ++i) acc[i] = 0.f;
    if (!valid) {
      if constexpr (kSplit > 1) {  // Its lanes still run AddKeyPair's products (discarded).
#pragma unroll
        for (int i = 0; i < kChannels; ++i) q[i] = 0.f;
      }
      return;
    }
#pragma unroll
    for (int c = 0; c < kVectors; ++c) {
      float f[8];
      UnpackEight<T>(vectors[c], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) q[c * 8 + i] = f[i] * scale;
    }
  }

  // Adds the key whose rows start at key_row / value_row (16-byte vectors).
  __device__ __forceinline__ void AddKey(const uint4* key_row, const uint4* value_row) {
    float partial[4] = {};  // Four chains, not one long one.
#pragma unroll
    for (int c = 0; c < kVectors; ++c) {
      float f[8];
      UnpackEight<T>(key_row[part * kVectors + c], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) partial[i % 4] += q[c * 8 + i] * f[i];
    }
    float s = (partial[0] + partial[1]) + (partial[2] + partial[3]);
    if constexpr (kSplit >= 2) s += __shfl_xor_sync(mask, s, 1);
    if constexpr (kSplit == 4) s += __shfl_xor_sync(mask, s, 2);
    RaiseMax(s);
    const float w = ExpFlushDenormals(s - m) - masked_weight;
    l += w;
    AddValue(value_row, w);
  }

  // Adds up to two keys in one step (TiledRowsKernel's loop): two independent q·k chains and
  // one rescale test, so that the two keys' latencies overlap and the loop's own instructions
  // (key index, bounds, branch) are paid once per pair. Called by all 32 lanes of the warp at
  // once (the shuffles name the whole warp, which spares the convergence checks that a
  // per-row mask costs on every key); a lane without a first key passes any staged row and
  // adds nothing; has_second implies has_first. A key it lacks reads key0's rows again.
  __device__ __forceinline__ void AddKeyPair(bool has_first, const uint4* key0,
                                             const uint4* value0, bool has_second,
                                             const uint4* key1, const uint4* value1) {
    float partial0[2] = {}, partial1[2] = {};
#pragma unroll
    for (int c = 0; c < kVectors; ++c) {
      float f[8], g[8];
      UnpackEight<T>(key0[part * kVectors + c], f);
      UnpackEight<T>(key1[part * kVectors + c], g);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        partial0[i % 2] += q[c * 8 + i] * f[i];
        partial1[i % 2] += q[c * 8 + i] * g[i];
      }
    }
    float s0 = partial0[0] + partial0[1];
    float s1 = partial1[0] + partial1[1];
    if constexpr (kSplit >= 2) {
      s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
      s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
    }
    if constexpr (kSplit == 4) {
      s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
      s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
    }
    if (!has_first) return;
    RaiseMax(has_second ? fmaxf(s0, s1) : s0);  // Once for the pair.
    const float w0 = ExpFlushDenormals(s0 - m) - masked_weight;
    if (!has_second) {  // A row's last key in the chunk: at most once per row and chunk.
      l += w0;
      AddValue(value0, w0);
      return;
    }
    const float w1 = ExpFlushDenormals(s1 - m) - masked_weight;
    l += w0 + w1;
    // Two multiply-adds per channel (acc += w0 f + w1 g as one expression would be three).
    AddValue(value0, w0);
    AddValue(value1, w1);
  }

  // A logit s above the running max by more than kRescaleSlack becomes the max, and what is
  // accumulated is rescaled to it (m = -inf: the first key).
  __device__ __forceinline__ void RaiseMax(float s) {
    if (s > m + kRescaleSlack) {
      const float correction = m == -INFINITY ? 0.f : ExpFlushDenormals(m - s);
      l *= correction;
      masked_weight *= correction;
#pragma unroll
      for (int i = 0; i < kChannels; ++i) acc[i] *= correction;
      m = s;
    }
  }

  // acc += w · (this thread's channels of the value row).
  __device__ __forceinline__ void AddValue(const uint4* value_row, float w) {
#pragma unroll
    for (int c = 0; c < kVectors; ++c) {
      float f[8];
      UnpackEight<T>(value_row[part * kVectors + c], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[c * 8 + i] += w * f[i];
    }
  }

  // Writes the row. colsum: the head's Σ_t v (64 floats; read only with the official
  // semantics). A row without keys under −∞ masking has l = 0: NaN, as softmax of nothing.
  __device__ __forceinline__ void Finish(const float* colsum, int tokens, bool official,
                                         uint4* out_row) const {
    float out[kChannels];
    if (official) {
      const float inv = 1.f / (l + static_cast<float>(tokens) * masked_weight);
#pragma unroll
      for (int i = 0; i < kChannels; ++i) {
        out[i] = (acc[i] + masked_weight * colsum[part * kChannels + i]) * inv;
      }
    } else {
      const float inv = 1.f / l;
#pragma unroll
      for (int i = 0; i < kChannels; ++i) out[i] = acc[i] * inv;
    }
#pragma unroll
    for (int c = 0; c < kVectors; ++c) {
      float f[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = out[c * 8 + i];
      out_row[part * kVectors + c] = Pack<T>(f);
    }
  }
};

// Key rows staged at a time: the tile ± 64 rows, so that the small shifts' ranges, which merge
// into one, take one chunk (at 128 rows, 74 KiB for keys and values: three blocks per SM).
template <int kTile>
constexpr int kChunkRows = kTile + 128;

// The key rows a tile of patch rows [t0, t_end) keeps: the union of the shifts' ranges
// [t0 + s, t_end + s) ∩ [prefix, tokens), as disjoint segments [lo[i], hi[i]) in increasing
// order (ranges that overlap or touch are one segment). Shared memory, written by
// MergeKeyRanges.
struct KeySegments {
  int lo[kMaxShifts];
  int hi[kMaxShifts];
  int count;
};

// Called by the 32 lanes of one warp (the rest of the block waits at the next __syncthreads):
// fills `segments` for the sorted `shifts` (padding shifts are past `tokens`), one shift per
// lane, 32 at a time. Sorted shifts give ranges whose ends never decrease and whose nonempty
// ones are consecutive, so a nonempty range starts a segment unless the range before it is
// nonempty and reaches it, and ends one unless the range after it continues it. Every thread
// of a block walked the shifts one by one before (profiled on the H100, 64 x 4 at 785 tokens:
// 12.5% of TiledRowsKernel's instructions and 18% of its stall samples).
__device__ __forceinline__ void MergeKeyRanges(const int* shifts, int nshift, int t0, int t_end,
                                               int prefix, int tokens, KeySegments& segments) {
  constexpr unsigned kWarp = 0xffffffffu;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  int count = 0;
  bool previous_nonempty = false;  // The range of the shift before this group's first.
  int previous_hi = 0;
  for (int group = 0; group < nshift; group += 32) {
    const int i = group + lane;
    int lo = 0, hi = 0;
    if (i < nshift) {
      lo = max(t0 + shifts[i], prefix);
      hi = min(t_end + shifts[i], tokens);
    }
    const bool nonempty = i < nshift && lo < hi;
    const unsigned nonempty_lanes = __ballot_sync(kWarp, nonempty);
    const int hi_up = __shfl_up_sync(kWarp, hi, 1);
    const int hi_before = lane == 0 ? previous_hi : hi_up;
    const bool nonempty_before =
        lane == 0 ? previous_nonempty : ((nonempty_lanes >> (lane - 1)) & 1u) != 0;
    const bool starts = nonempty && (!nonempty_before || lo > hi_before);
    const unsigned start_lanes = __ballot_sync(kWarp, starts);
    // This lane's segment: the starts at or below it, after the groups before (2u << 31 is 0,
    // so lane 31's mask is every lane).
    const int segment = count + __popc(start_lanes & ((2u << lane) - 1u)) - 1;
    // The last lane's segment may go on in the next group, which then writes its end again.
    const bool ends = nonempty && (lane == 31 || !((nonempty_lanes >> (lane + 1)) & 1u) ||
                                   ((start_lanes >> (lane + 1)) & 1u));
    if (starts) segments.lo[segment] = lo;
    if (ends) segments.hi[segment] = hi;
    count += __popc(start_lanes);
    previous_nonempty = (nonempty_lanes >> 31) != 0;
    previous_hi = __shfl_sync(kWarp, hi, 31);
    __syncwarp();  // This group's stores land before the next group's.
  }
  if (lane == 0) segments.count = count;
}

// Stages, chunk by chunk, the key and value rows of `segments` (MergeKeyRanges, visible to the
// whole block), each segment cut into chunks of at most kChunk rows. For each chunk [c0, c1)
// every thread of the block calls use_chunk(c0, c1) while the chunk's rows are in staged_k /
// staged_v (row r at (r - c0) * kPaddedRow). Each key a row of the tile keeps lies in exactly
// one chunk. Called by every thread of the block (it synchronises the block).
template <int kThreadsPerBlock, int kChunk, typename UseChunk>
__device__ __forceinline__ void ForEachStagedChunk(const KeySegments& segments, const uint4* k,
                                                   const uint4* v, uint4* staged_k,
                                                   uint4* staged_v, UseChunk&& use_chunk) {
  const int count = segments.count;
  for (int segment = 0; segment < count; ++segment) {
    const int lo = segments.lo[segment], hi = segments.hi[segment];
    for (int c0 = lo; c0 < hi; c0 += kChunk) {
      const int c1 = min(c0 + kChunk, hi);
      __syncthreads();  // The previous chunk's readers are done.
      // Asynchronous copies (cp.async): every load of the chunk is in flight at once, where
      // load-then-store through registers waited for each before issuing the next.
      for (int i = threadIdx.x; i < (c1 - c0) * kRowVectors; i += kThreadsPerBlock) {
        const int staged_index = (i / kRowVectors) * kPaddedRow + i % kRowVectors;
        const long global_index = static_cast<long>(c0) * kRowVectors + i;
        __pipeline_memcpy_async(staged_k + staged_index, k + global_index, sizeof(uint4));
        __pipeline_memcpy_async(staged_v + staged_index, v + global_index, sizeof(uint4));
      }
      __pipeline_commit();
      __pipeline_wait_prior(0);
      __syncthreads();
      use_chunk(c0, c1);
    }
  }
}

// Occupancy: 12 warps per SM with whole rows per thread (at most 170 registers), 16 with two
// threads per row, 32 with four (at most 64 registers).
template <int kThreadsPerBlock, int kSplit>
constexpr int kMinBlocksPerSm = (kSplit == 1 ? 384 : kSplit == 2 ? 512 : 1024) / kThreadsPerBlock;

// kSplit threads per patch row (PatchRow); a warp's rows read consecutive staged rows at each
// shift. One block per (tile of kTile rows, batch · head); see the file comment. Dynamic
// shared memory: kChunk key rows, then kChunk value rows, kPaddedRow apart.
template <typename T, int kTile, int kSplit>
__global__ void __launch_bounds__(kTile * kSplit, (kMinBlocksPerSm<kTile * kSplit, kSplit>))
    TiledRowsKernel(FibParams p, const float* colsum) {
  constexpr int kThreadsPerBlock = kTile * kSplit;
  constexpr int kChunk = kChunkRows<kTile>;
  extern __shared__ uint4 staged[];
  uint4* staged_k = staged;
  uint4* staged_v = staged + kChunk * kPaddedRow;
  __shared__ int shifts[kMaxShifts];
  __shared__ KeySegments segments;
  __shared__ uint4 class_k[kRowVectors], class_v[kRowVectors];

  const int tokens = p.tokens;
  const int prefix = p.class_token ? 1 : 0;
  const int t0 = prefix + static_cast<int>(blockIdx.x) * kTile;
  const int t_end = min(t0 + kTile, tokens);  // One past the tile's last row.
  const int t = t0 + static_cast<int>(threadIdx.x) / kSplit;
  const bool row_valid = t < tokens;
  const long bh = blockIdx.y;
  const int head = static_cast<int>(bh % p.heads);
  const int nshift = p.shift_width;
  const long head_offset = bh * tokens * kDim;
  const auto* k = reinterpret_cast<const uint4*>(static_cast<const T*>(p.k) + head_offset);
  const auto* v = reinterpret_cast<const uint4*>(static_cast<const T*>(p.v) + head_offset);
  const auto* query_rows = reinterpret_cast<const uint4*>(static_cast<const T*>(p.q) + head_offset);

  // The loads first: the query row's, whose latency the shifts and their segments cover, and
  // the class token's key and value rows (warp 1; every patch row keeps that key).
  using Row = PatchRow<T, kSplit>;
  uint4 query[Row::kVectors] = {};
  if (row_valid) Row::LoadQueryVectors(query_rows + static_cast<long>(t) * kRowVectors, query);
  if (p.class_token && threadIdx.x >= 32 && threadIdx.x < 32 + kRowVectors) {
    class_k[threadIdx.x - 32] = k[threadIdx.x - 32];
    class_v[threadIdx.x - 32] = v[threadIdx.x - 32];
  }
  for (int i = threadIdx.x; i < nshift; i += kThreadsPerBlock) {
    shifts[i] = p.shifts[static_cast<long>(head) * nshift + i];
  }
  __syncthreads();  // shifts[] is written.
  if (threadIdx.x < 32) MergeKeyRanges(shifts, nshift, t0, t_end, prefix, tokens, segments);
  Row row;
  row.Start(query, row_valid, p.scale, p.official);
  __syncthreads();  // segments, class_k and class_v are written.
  if (p.class_token && row_valid) row.AddKey(class_k, class_v);

  // Keys of row t rise with the shift; those below c0 are below `prefix` (every patch key of
  // the row is in the union, so an earlier chunk took it). Rows past the end take none.
  // Split rows (kSplit 2 or 4) loop while any row of the warp has a key in the chunk, two keys
  // per step, with every lane in it (AddKeyPair's shuffles span the warp); the rows of a warp
  // have the same shifts and consecutive t, so they run out of keys within a step or two of
  // one another. Whole rows (kSplit 1: no shuffles, 64 products per key) take one key per
  // step: pairs were 3-5% slower at 3,137 tokens on the H100 (docs/performance.md, run L).
  int next = 0;  // This row's next shift not yet taken.
  ForEachStagedChunk<kThreadsPerBlock, kChunk>(
      segments, k, v, staged_k, staged_v, [&](int c0, int c1) {
        if constexpr (kSplit == 1) {
          for (; row_valid && next < nshift; ++next) {
            const int key = t + shifts[next];
            if (key >= c1) break;
            if (key >= c0) {
              row.AddKey(staged_k + (key - c0) * kPaddedRow, staged_v + (key - c0) * kPaddedRow);
            }
          }
        } else {
          while (row_valid && next < nshift && t + shifts[next] < c0) ++next;
          for (;;) {
            const bool has_first = row_valid && next < nshift && t + shifts[next] < c1;
            if (!__any_sync(0xffffffffu, has_first)) break;
            const bool has_second =
                has_first && next + 1 < nshift && t + shifts[next + 1] < c1;
            const int row0 = has_first ? t + shifts[next] - c0 : 0;
            const int row1 = has_second ? t + shifts[next + 1] - c0 : row0;
            row.AddKeyPair(has_first, staged_k + row0 * kPaddedRow,
                           staged_v + row0 * kPaddedRow, has_second,
                           staged_k + row1 * kPaddedRow, staged_v + row1 * kPaddedRow);
            next += static_cast<int>(has_first) + static_cast<int>(has_second);
          }
        }
      });
  if (!row_valid) return;
  WaitForPrerequisiteGrid();  // colsum, when DenseRowKernel's grid may still be running.
  row.Finish(colsum + bh * kDim, tokens, p.official,
             reinterpret_cast<uint4*>(static_cast<T*>(p.out) + head_offset) +
                 static_cast<long>(t) * kRowVectors);
}

// MmaRowsKernel: the tiled kernel's staging with the products on tensor cores. Each warp owns
// 16 consecutive patch rows; for one shift s its rows keep the keys t + s, the diagonal of the
// 16 x 16 block of scores between its rows and the 16 keys from row0 + s. mma.sync m16n8k16
// computes that block (two 8-key halves, four 16-channel steps) and then P V with P the
// diagonal matrix of the softmax weights: 16 of each block's 256 products are kept, but the
// tensor cores take the fp16/bf16 rows as staged, so a key costs no conversions, and the
// 16 keys' rows come from shared memory in 8 ldmatrix instructions (4 for K, 4 transposed for
// V) where the CUDA-core kernel issues 32 loads and 128 conversions per 16 keys. (Run I's first
// version of this kernel loaded each fragment register by itself, with a validity test per
// register: about 230 instructions per shift and warp in sm_90 SASS without a rescale, now
// about 85.) Two shifts per step where a warp has them, so that two blocks' loads and
// products overlap. tools/fib_mma_emulation.py emulates this kernel lane by lane.
// The row i of a block is kept where row0 + i is a row and key row0 + s + i lies in the chunk;
// lanes whose key falls outside it read a staged row of the chunk instead (its weight is 0:
// never stale shared memory, whose bits may be NaN, and 0 x NaN would not be 0).
//   mma fragments (PTX ISA, mma.m16n8k16, f16/bf16 in, f32 out), lane = 4 g + c:
//   A (16 x 16, row-major): reg 0 = row g, columns 2c, 2c+1; reg 1 = row g+8, same columns;
//     reg 2 = row g, columns 2c+8, 2c+9; reg 3 = row g+8, columns 2c+8, 2c+9.
//   B (16 x 8): reg 0 = rows 2c, 2c+1 of column g; reg 1 = rows 2c+8, 2c+9 of column g.
//   C (16 x 8, f32): c0, c1 = row g, columns 2c, 2c+1; c2, c3 = row g+8, same columns.
// So the diagonal's entries (g, g) and (g + 8, g + 8) both sit on the quad's lane c = g / 2
// (C of n-tile 0, element g % 2; C of n-tile 1, element 2 + g % 2), and that lane's A
// registers 0 and 3 hold the same entries of P: this "holder" lane keeps rows g and g + 8's
// softmax state, and the other lanes of the quad hear from it only when the accumulator must
// be rescaled and at the end.
// kWarps warps per block (4 or 8): 16 * kWarps patch rows per block.
template <int kWarps>
constexpr int kMmaTile = 16 * kWarps;
template <int kWarps>
constexpr int kMmaThreads = 32 * kWarps;
// 64-row blocks: 4 per SM (55 KB of shared memory each), so up to 128 registers; 128-row
// blocks: 2 per SM at 74 KB (three would cap registers at 85).
template <int kWarps>
constexpr int kMmaMinBlocksPerSm = kWarps == 4 ? 4 : 2;

// Volatile: a warp-collective instruction, which the compiler must not sink into a branch
// that only some lanes take (a lane uses its scores only where it keeps the key).
template <typename T>
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#else
  __trap();  // Launched only on compute capability 8.0 and above (MmaFibottentionSupports).
#endif
}

// Four 8 x 8 matrices of 16-bit values from shared memory (ldmatrix): lanes 8m to 8m + 7 give
// the addresses of matrix m's eight 16-byte rows; lane 4g + c receives row g's elements 2c,
// 2c + 1 of each (kTranspose: rows 2c, 2c + 1 of column g). Volatile with a memory clobber:
// it reads what other threads staged, so it must stay after the barrier that publishes it.
template <bool kTranspose>
__device__ __forceinline__ void LoadMatrices(uint32_t (&r)[4], const uint4* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  if constexpr (kTranspose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address)
                 : "memory");
  }
#else
  __trap();
#endif
}

// Two values as one register of T pairs (the lower column in the low half).
template <typename T>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  const typename PairOf<T>::Type pair = FromFloat2<T>(make_float2(lo, hi));
  uint32_t bits;
  memcpy(&bits, &pair, sizeof(bits));
  return bits;
}

// Rows g and g + 8's online softmax on their holder lane (PatchRow's rules: m starts at 0 with
// the official semantics, a kept key's weight gives back e^{-m}, and the accumulator is
// rescaled only when the max grows by more than kRescaleSlack). Other lanes carry a copy that
// no key reaches.
struct MmaRowState {
  float m;
  float masked_weight;
  float l;
};

// One diagonal block of a warp's step: this lane's row addresses for the block's ldmatrix
// loads (the staged key row of key KeyLoadRow(lane) and value row of key ValueLoadRow(lane) of
// the block's 16, or stand-ins) and, on the holder lane, whether rows g and g + 8 keep their
// keys.
struct DiagonalBlock {
  const uint4* key_row;
  const uint4* value_row;
  bool keep[2];
};
// The lane of `lane`'s quad that holds its rows' diagonal entries: c = g / 2.
__device__ __forceinline__ int HolderLane(int lane) { return (lane & ~3) | (lane >> 3); }
// The block's key whose K row this lane addresses: matrices (keys 0-7, vector 2s), (0-7,
// 2s + 1), (8-15, 2s), (8-15, 2s + 1), so that each n-tile's two B registers come out as a
// pair (mma.sync takes them as consecutive registers; any other order costs moves).
__device__ __forceinline__ int KeyLoadRow(int lane) { return (lane & 7) + 8 * (lane >> 4); }
// The block's key whose V row this lane addresses (transposed): matrices (keys 0-7, vector j),
// (8-15, j), (0-7, j + 1), (8-15, j + 1), i.e. n-tile j's pair, then n-tile j + 1's.
__device__ __forceinline__ int ValueLoadRow(int lane) { return lane & 15; }

// Adds kBlocks diagonal blocks (1 or 2) to the warp's 16 rows: called by all 32 lanes.
// qa: the rows' query as A fragments, one per 16-channel step; acc[n]: C fragments of the
// output's 8-channel n-tile n.
template <typename T, int kBlocks>
__device__ __forceinline__ void AddDiagonalBlocks(const uint32_t (&qa)[4][4], float (&acc)[8][4],
                                                  MmaRowState (&state)[2],
                                                  const DiagonalBlock (&blocks)[kBlocks],
                                                  float scale) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane >> 2;
  // Scores: n-tile 0 has the block's keys 0-7 as columns, n-tile 1 keys 8-15; channel step s
  // takes vectors 2s and 2s + 1 (KeyLoadRow).
  float scores[kBlocks][2];
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
    float tile[2][4] = {};
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      uint32_t r[4];
      LoadMatrices<false>(r, blocks[b].key_row + 2 * s + ((lane >> 3) & 1));
      Mma16816<T>(tile[0], qa[s], r[0], r[1]);
      Mma16816<T>(tile[1], qa[s], r[2], r[3]);
    }
    scores[b][0] = ((g & 1) ? tile[0][1] : tile[0][0]) * scale;
    scores[b][1] = ((g & 1) ? tile[1][3] : tile[1][2]) * scale;
  }
  // Raise each row's max where a kept score passes it by more than the slack; the quad's other
  // lanes hold the same rows' accumulator, so the correction goes to them by shuffle (rarely:
  // with the official semantics m starts at 0 and logits stay small).
  bool raise = false;
  float block_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int b = 0; b < kBlocks; ++b) {
      if (blocks[b].keep[h]) block_max[h] = fmaxf(block_max[h], scores[b][h]);
    }
    raise |= block_max[h] > state[h].m + kRescaleSlack;
  }
  if (__any_sync(0xffffffffu, raise)) {
    const int holder = HolderLane(lane);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float correction = 1.f;
      if (block_max[h] > state[h].m + kRescaleSlack) {  // m = -inf: the first key.
        correction =
            state[h].m == -INFINITY ? 0.f : ExpFlushDenormals(state[h].m - block_max[h]);
        state[h].l *= correction;
        state[h].masked_weight *= correction;
        state[h].m = block_max[h];
      }
      correction = __shfl_sync(0xffffffffu, correction, holder);
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        acc[n][2 * h] *= correction;
        acc[n][2 * h + 1] *= correction;
      }
    }
  }
  // P: row g's weight in A register 0 and row g + 8's in register 3, element g % 2 of each
  // (zero elsewhere, and on every lane but the holder, whose keep flags alone can be set). The
  // weight as P holds it is what the denominator adds, so the two agree.
  uint32_t pa[kBlocks][4];
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
    float weight[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      weight[h] = 0.f;
      if (blocks[b].keep[h]) {
        weight[h] = ToFloat(FromFloat<T>(ExpFlushDenormals(scores[b][h] - state[h].m) -
                                         state[h].masked_weight));
        state[h].l += weight[h];
      }
    }
    pa[b][0] = (g & 1) ? PackPair<T>(0.f, weight[0]) : PackPair<T>(weight[0], 0.f);
    pa[b][1] = 0u;
    pa[b][2] = 0u;
    pa[b][3] = (g & 1) ? PackPair<T>(0.f, weight[1]) : PackPair<T>(weight[1], 0.f);
  }
  // P V: value vectors j and j + 1 (channels 8j to 8j + 15) of keys 0-15, transposed
  // (ValueLoadRow): B registers 0 and 1 of n-tiles j and j + 1.
#pragma unroll
  for (int b = 0; b < kBlocks; ++b) {
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      uint32_t r[4];
      LoadMatrices<true>(r, blocks[b].value_row + j + (lane >> 4));
      Mma16816<T>(acc[j], pa[b], r[0], r[1]);
      Mma16816<T>(acc[j + 1], pa[b], r[2], r[3]);
    }
  }
}

template <typename T, int kWarps>
__global__ void __launch_bounds__(kMmaThreads<kWarps>, kMmaMinBlocksPerSm<kWarps>)
    MmaRowsKernel(FibParams p, const float* colsum) {
  constexpr int kTile = kMmaTile<kWarps>;
  constexpr int kThreads = kMmaThreads<kWarps>;
  constexpr int kChunk = kChunkRows<kTile>;
  extern __shared__ uint4 staged[];
  uint4* staged_k = staged;
  uint4* staged_v = staged + kChunk * kPaddedRow;
  __shared__ int shifts[kMaxShifts];
  __shared__ uint4 class_k[kRowVectors], class_v[kRowVectors];
  __shared__ KeySegments segments;

  const int tokens = p.tokens;
  const int prefix = p.class_token ? 1 : 0;
  const int t0 = prefix + static_cast<int>(blockIdx.x) * kTile;
  const int t_end = min(t0 + kTile, tokens);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane >> 2, c = lane & 3;
  const bool holder = HolderLane(lane) == lane;
  const int row0 = t0 + 16 * warp;  // The warp's first patch row.
  const long bh = blockIdx.y;
  const int head = static_cast<int>(bh % p.heads);
  const int nshift = p.shift_width;
  for (int i = threadIdx.x; i < nshift; i += kThreads) {
    shifts[i] = p.shifts[static_cast<long>(head) * nshift + i];
  }
  const long head_offset = bh * tokens * kDim;
  const auto* k = reinterpret_cast<const uint4*>(static_cast<const T*>(p.k) + head_offset);
  const auto* v = reinterpret_cast<const uint4*>(static_cast<const T*>(p.v) + head_offset);
  if (p.class_token && threadIdx.x < kRowVectors) {
    class_k[threadIdx.x] = k[threadIdx.x];
    class_v[threadIdx.x] = v[threadIdx.x];
  }

  // The query rows g and g + 8 of the warp as A fragments, one per 16-channel step (zero past
  // the end). Unscaled: the scale multiplies the scores.
  const int rows[2] = {row0 + g, row0 + g + 8};
  const bool row_valid[2] = {rows[0] < tokens, rows[1] < tokens};
  const auto* q_words = reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.q) + head_offset);
  uint32_t qa[4][4];
#pragma unroll
  for (int step = 0; step < 4; ++step) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int half = r & 1;  // Row g or g + 8.
      const int word = step * 8 + (r >> 1) * 4 + c;
      qa[step][r] = row_valid[half] ? q_words[static_cast<long>(rows[half]) * 32 + word] : 0u;
    }
  }
  float acc[8][4] = {};
  MmaRowState state[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    state[h].m = p.official ? 0.f : -INFINITY;
    state[h].masked_weight = p.official ? 1.f : 0.f;
    state[h].l = 0.f;
  }
  __syncthreads();  // shifts[], class_k and class_v are written.
  if (warp == 0) MergeKeyRanges(shifts, nshift, t0, t_end, prefix, tokens, segments);
  __syncthreads();  // segments is written.

  // Every patch row keeps the class token: a block whose 16 keys are all key 0.
  if (p.class_token) {
    const DiagonalBlock class_block[1] = {
        {class_k, class_v, {holder && row_valid[0], holder && row_valid[1]}}};
    AddDiagonalBlocks<T, 1>(qa, acc, state, class_block, p.scale);
  }

  ForEachStagedChunk<kThreads, kChunk>(
      segments, k, v, staged_k, staged_v, [&](int c0, int c1) {
        // The block of keys first ... first + 15 within this chunk (every kept key lies in
        // exactly one chunk; the chunks start at or after `prefix`).
        const auto block_at = [&](int first) {
          const auto staged_row = [&](int key) {  // A staged row: key's, or the nearest.
            return (min(max(key, c0), c1 - 1) - c0) * kPaddedRow;
          };
          DiagonalBlock block{staged_k + staged_row(first + KeyLoadRow(lane)),
                              staged_v + staged_row(first + ValueLoadRow(lane)), {false, false}};
#pragma unroll
          for (int h = 0; h < 2; ++h) {  // Bitwise: no branches.
            const int own_key = first + g + 8 * h;
            block.keep[h] = holder & row_valid[h] & (own_key >= c0) & (own_key < c1);
          }
          return block;
        };
        // The shifts whose 16 keys (row0 + s ... row0 + s + 15) meet the chunk, two at a time.
        int j = 0;
        const auto next_first = [&]() {  // row0 + the next such shift, or c1 when none is left.
          while (j < nshift) {
            const int first = row0 + shifts[j++];
            if (first >= c1) break;  // Sorted: every later shift's keys are past the chunk.
            if (first + 16 > c0) return first;
          }
          j = nshift;
          return c1;
        };
        for (;;) {
          const int first0 = next_first();
          if (first0 >= c1) break;
          const int first1 = next_first();
          if (first1 >= c1) {
            const DiagonalBlock one[1] = {block_at(first0)};
            AddDiagonalBlocks<T, 1>(qa, acc, state, one, p.scale);
            break;
          }
          const DiagonalBlock two[2] = {block_at(first0), block_at(first1)};
          AddDiagonalBlocks<T, 2>(qa, acc, state, two, p.scale);
        }
      });

  // out = (acc + e^{-m} Σ_t v) / (l + T e^{-m}) with the official semantics, acc / l without;
  // the quad's lanes take l and e^{-m} from the holder.
  WaitForPrerequisiteGrid();  // colsum, when DenseRowKernel's grid may still be running.
  const float* head_colsum = colsum + bh * kDim;
  auto* out_words = reinterpret_cast<uint32_t*>(static_cast<T*>(p.out) + head_offset);
  const int holder_lane = HolderLane(lane);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float l = __shfl_sync(0xffffffffu, state[h].l, holder_lane);
    const float masked_weight = __shfl_sync(0xffffffffu, state[h].masked_weight, holder_lane);
    if (!row_valid[h]) continue;
    const float inv = 1.f / (p.official ? l + static_cast<float>(tokens) * masked_weight : l);
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      const int channel = n * 8 + 2 * c;
      float lo = acc[n][2 * h], hi = acc[n][2 * h + 1];
      if (p.official) {
        lo += masked_weight * head_colsum[channel];
        hi += masked_weight * head_colsum[channel + 1];
      }
      out_words[static_cast<long>(rows[h]) * 32 + channel / 2] = PackPair<T>(lo * inv, hi * inv);
    }
  }
}

// WholeHeadKernel: one block per (batch, head) for sequences of at most kWholeMaxTokens, all
// key and value rows staged in shared memory once: Σ_t v, the class row and every patch row
// (two threads each) in one launch, reading q, k and v from memory once.
constexpr int kWholeThreads = 256;
constexpr int kWholeMaxTokens = 320;
constexpr int kWholeWarps = kWholeThreads / 32;
constexpr int kWholeRowsPerPass = kWholeThreads / 2;
constexpr int kWholeChannelGroups = kWholeThreads / kDim;  // Row subsets per channel.

size_t WholeHeadSharedBytes(int tokens) {
  return 2 * static_cast<size_t>(tokens) * kPaddedRow * sizeof(uint4) + tokens * sizeof(float);
}

// Max (kMax) or sum over the block; every thread gets the result. `scratch`: kWholeWarps floats.
template <bool kMax>
__device__ __forceinline__ float WholeBlockReduce(float x, float* scratch) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, x, off);
    x = kMax ? fmaxf(x, other) : x + other;
  }
  __syncthreads();  // scratch is free (an earlier reduction's readers are done).
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  x = scratch[0];
#pragma unroll
  for (int w = 1; w < kWholeWarps; ++w) x = kMax ? fmaxf(x, scratch[w]) : x + scratch[w];
  return x;
}

template <typename T>
__global__ void __launch_bounds__(kWholeThreads, 2) WholeHeadKernel(FibParams p) {
  const int tokens = p.tokens;
  extern __shared__ uint4 staged[];
  uint4* staged_k = staged;
  uint4* staged_v = staged + tokens * kPaddedRow;
  float* class_weights = reinterpret_cast<float*>(staged + 2 * tokens * kPaddedRow);
  __shared__ int shifts[kMaxShifts];
  __shared__ float class_query[kDim];
  __shared__ float head_colsum[kDim];
  __shared__ float channel_sums[2][kWholeChannelGroups][kDim];
  __shared__ float scratch[kWholeWarps];

  const long bh = blockIdx.x;
  const int head = static_cast<int>(bh % p.heads);
  const int prefix = p.class_token ? 1 : 0;
  const int nshift = p.shift_width;
  const long head_offset = bh * tokens * kDim;
  const auto* k = reinterpret_cast<const uint4*>(static_cast<const T*>(p.k) + head_offset);
  const auto* v = reinterpret_cast<const uint4*>(static_cast<const T*>(p.v) + head_offset);
  const T* q = static_cast<const T*>(p.q) + head_offset;
  for (int i = threadIdx.x; i < tokens * kRowVectors; i += kWholeThreads) {
    const int staged_index = (i / kRowVectors) * kPaddedRow + i % kRowVectors;
    __pipeline_memcpy_async(staged_k + staged_index, k + i, sizeof(uint4));
    __pipeline_memcpy_async(staged_v + staged_index, v + i, sizeof(uint4));
  }
  __pipeline_commit();
  for (int i = threadIdx.x; i < nshift; i += kWholeThreads) {
    shifts[i] = p.shifts[static_cast<long>(head) * nshift + i];
  }
  if (p.class_token && threadIdx.x < kDim) {
    class_query[threadIdx.x] = ToFloat(q[threadIdx.x]) * p.scale;
  }
  __pipeline_wait_prior(0);
  __syncthreads();

  // The class row's softmax weights over every key (class_weights), normalised by its sum.
  float class_sum = 1.f;
  if (p.class_token) {
    float local_max = -INFINITY;
    for (int j = threadIdx.x; j < tokens; j += kWholeThreads) {
      float partial[4] = {};
#pragma unroll
      for (int c = 0; c < kRowVectors; ++c) {
        float f[8];
        UnpackEight<T>(staged_k[j * kPaddedRow + c], f);
#pragma unroll
        for (int i = 0; i < 8; ++i) partial[i % 4] += class_query[c * 8 + i] * f[i];
      }
      const float s = (partial[0] + partial[1]) + (partial[2] + partial[3]);
      class_weights[j] = s;
      local_max = fmaxf(local_max, s);
    }
    const float class_max = WholeBlockReduce<true>(local_max, scratch);
    float local_sum = 0.f;
    for (int j = threadIdx.x; j < tokens; j += kWholeThreads) {
      const float w = ExpFlushDenormals(class_weights[j] - class_max);
      class_weights[j] = w;
      local_sum += w;
    }
    class_sum = WholeBlockReduce<false>(local_sum, scratch);  // Its barriers publish the weights.
  }
  // Σ_t v and the class row's output, channel e over the rows j ≡ group (mod groups).
  {
    const int e = threadIdx.x % kDim, group = threadIdx.x / kDim;
    const auto* values = reinterpret_cast<const T*>(staged_v);
    float column = 0.f, weighted = 0.f;
    for (int j = group; j < tokens; j += kWholeChannelGroups) {
      const float x = ToFloat(values[j * kPaddedRow * 8 + e]);
      column += x;
      if (p.class_token) weighted += class_weights[j] * x;
    }
    channel_sums[0][group][e] = column;
    channel_sums[1][group][e] = weighted;
    __syncthreads();
    if (threadIdx.x < kDim) {
      float c = 0.f, w = 0.f;
#pragma unroll
      for (int g = 0; g < kWholeChannelGroups; ++g) {
        c += channel_sums[0][g][e];
        w += channel_sums[1][g][e];
      }
      head_colsum[e] = c;
      if (p.class_token) {
        static_cast<T*>(p.out)[head_offset + e] = FromFloat<T>(w / class_sum);
      }
    }
    __syncthreads();
  }
  // The patch rows, kWholeRowsPerPass at a time, two threads each.
  const auto* query_rows = reinterpret_cast<const uint4*>(q);
  auto* out_rows = reinterpret_cast<uint4*>(static_cast<T*>(p.out) + head_offset);
  for (int base = prefix; base < tokens; base += kWholeRowsPerPass) {
    const int t = base + static_cast<int>(threadIdx.x) / 2;
    if (t >= tokens) break;  // Both threads of a row leave together.
    PatchRow<T, 2> row;
    row.Start(query_rows + static_cast<long>(t) * kRowVectors, p.scale, p.official);
    if (p.class_token) row.AddKey(staged_k, staged_v);
    for (int j = 0; j < nshift; ++j) {
      const int key = t + shifts[j];
      if (key >= tokens) break;
      if (key >= prefix) row.AddKey(staged_k + key * kPaddedRow, staged_v + key * kPaddedRow);
    }
    row.Finish(head_colsum, tokens, p.official, out_rows + static_cast<long>(t) * kRowVectors);
  }
}

// What both the tiled and the whole-head kernels need.
bool HalfHeads64(const FibParams& p) {
  return p.dim == kDim && (p.dtype == FibDtype::kFloat16 || p.dtype == FibDtype::kBFloat16) &&
         p.shifts != nullptr && p.shift_width >= 1 && p.shift_width <= kMaxShifts &&
         TensorsAligned16(p);
}

// The current device's compute capability major version (0 when it cannot be read): tensor
// cores' mma.sync need 8, programmatic dependent launches 9.
int ComputeCapabilityMajor() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    return 0;
  }
  return major;
}

// DenseRowKernel (the class row and Σ_t v), where the launch needs it, then a patch rows kernel
// (TiledRowsKernel, MmaRowsKernel) over blocks of `tile` rows and `threads` threads with
// `shared_bytes` of dynamic shared memory. overlap_dense_row (compute capability 9.0 and
// above): the rows kernel is a programmatic dependent of DenseRowKernel, which then runs beside
// it instead of before it.
template <typename T>
cudaError_t LaunchDenseRowAndRows(const FibParams& p, void (*rows_kernel)(FibParams, const float*),
                                  int tile, int threads, size_t shared_bytes,
                                  bool overlap_dense_row, float* colsum, cudaStream_t stream) {
  const bool dense_row = p.class_token || p.official;
  if (dense_row) {
    DenseRowKernel<T><<<p.batch * p.heads, kDenseRowThreads, 0, stream>>>(
        p, colsum, p.class_token, p.official);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int rows = p.tokens - (p.class_token ? 1 : 0);
  if (rows <= 0) return cudaSuccess;
  // Above the 48 KiB default.
  const cudaError_t err = cudaFuncSetAttribute(
      rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes));
  if (err != cudaSuccess) return err;
  const bool overlap = overlap_dense_row && dense_row && ComputeCapabilityMajor() >= 9;
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3((rows + tile - 1) / tile, p.batch * p.heads);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = overlap ? &attribute : nullptr;
  config.numAttrs = overlap ? 1 : 0;
  return cudaLaunchKernelEx(&config, rows_kernel, p, static_cast<const float*>(colsum));
}

template <typename T, int kTile, int kSplit>
cudaError_t LaunchRows(const FibParams& p, bool overlap_dense_row, float* colsum,
                       cudaStream_t stream) {
  return LaunchDenseRowAndRows<T>(p, TiledRowsKernel<T, kTile, kSplit>, kTile, kTile * kSplit,
                                  2 * kChunkRows<kTile> * kPaddedRow * sizeof(uint4),
                                  overlap_dense_row, colsum, stream);
}

template <typename T, int kWarps>
cudaError_t LaunchMmaRows(const FibParams& p, bool overlap_dense_row, float* colsum,
                          cudaStream_t stream) {
  return LaunchDenseRowAndRows<T>(p, MmaRowsKernel<T, kWarps>, kMmaTile<kWarps>,
                                  kMmaThreads<kWarps>,
                                  2 * kChunkRows<kMmaTile<kWarps>> * kPaddedRow * sizeof(uint4),
                                  overlap_dense_row, colsum, stream);
}

template <typename T>
cudaError_t LaunchWholeHead(const FibParams& p, cudaStream_t stream) {
  const size_t shared_bytes = WholeHeadSharedBytes(p.tokens);
  const cudaError_t err = cudaFuncSetAttribute(
      WholeHeadKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(WholeHeadSharedBytes(kWholeMaxTokens)));
  if (err != cudaSuccess) return err;
  WholeHeadKernel<T><<<p.batch * p.heads, kWholeThreads, shared_bytes, stream>>>(p);
  return cudaGetLastError();
}

// overlap: overlap_dense_row (LaunchDenseRowAndRows).
template <typename T>
cudaError_t LaunchTiledTyped(const FibParams& p, TiledShape shape, bool overlap, float* colsum,
                             cudaStream_t stream) {
  if (shape.tile_queries == 64) {
    return shape.threads_per_row == 4   ? LaunchRows<T, 64, 4>(p, overlap, colsum, stream)
           : shape.threads_per_row == 2 ? LaunchRows<T, 64, 2>(p, overlap, colsum, stream)
                                        : LaunchRows<T, 64, 1>(p, overlap, colsum, stream);
  }
  return shape.threads_per_row == 4   ? LaunchRows<T, 128, 4>(p, overlap, colsum, stream)
         : shape.threads_per_row == 2 ? LaunchRows<T, 128, 2>(p, overlap, colsum, stream)
                                      : LaunchRows<T, 128, 1>(p, overlap, colsum, stream);
}

}  // namespace

TiledShape TiledShapeFor(int tokens, TiledShape requested) {
  // Measured on the H200 (docs/performance.md, Fibottention), batch 64, 12 heads: at 785
  // tokens 64 rows of four threads each took 0.275 ms (fp16) and 0.283 (bf16) against 0.291 /
  // 0.300 for two threads and 0.302 / 0.311 for 128 rows of one (run I); at 3,137 tokens 128
  // rows of one took 1.45-1.52 ms against 1.58-1.62 for 64 x 4 and 1.60-1.65 for 64 x 2.
  const bool up_to_1024 = tokens <= 1024;
  TiledShape shape = requested;
  if (shape.tile_queries == 0) shape.tile_queries = up_to_1024 ? 64 : 128;
  if (shape.threads_per_row == 0) shape.threads_per_row = up_to_1024 ? 4 : 1;
  return shape;
}

bool TiledFibottentionSupports(const FibParams& p, TiledShape shape) {
  shape = TiledShapeFor(p.tokens, shape);
  return HalfHeads64(p) && (shape.tile_queries == 64 || shape.tile_queries == 128) &&
         (shape.threads_per_row == 1 || shape.threads_per_row == 2 ||
          shape.threads_per_row == 4) &&
         static_cast<long>(p.batch) * p.heads <= kMaxBlocksY;
}

cudaError_t LaunchTiledFibottention(const FibParams& p, TiledShape shape, bool overlap_dense_row,
                                    float* colsum_workspace, cudaStream_t stream) {
  if (!TiledFibottentionSupports(p, shape)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.heads == 0 || p.tokens == 0) return cudaSuccess;
  shape = TiledShapeFor(p.tokens, shape);
  if (p.dtype == FibDtype::kFloat16) {
    return LaunchTiledTyped<__half>(p, shape, overlap_dense_row, colsum_workspace, stream);
  }
  return LaunchTiledTyped<__nv_bfloat16>(p, shape, overlap_dense_row, colsum_workspace, stream);
}

int MmaTileFor(int tile_queries) {
  // 128 rows per block stage each key row less often than 64 (2.40 against 3.86 rows per patch
  // row at 785 tokens, docs/performance.md run T), and both keep 16 warps per SM (64 rows:
  // four blocks, held by shared memory; 128: two, held by registers). Run I's first version
  // ran both within 2% of each other; the rewrite is not yet measured.
  return tile_queries == 0 ? 128 : tile_queries;
}

bool MmaFibottentionSupports(const FibParams& p, int tile_queries) {
  const int tile = MmaTileFor(tile_queries);
  return ComputeCapabilityMajor() >= 8 && HalfHeads64(p) && (tile == 64 || tile == 128) &&
         static_cast<long>(p.batch) * p.heads <= kMaxBlocksY;
}

cudaError_t LaunchMmaFibottention(const FibParams& p, int tile_queries, bool overlap_dense_row,
                                  float* colsum_workspace, cudaStream_t stream) {
  if (!MmaFibottentionSupports(p, tile_queries)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.heads == 0 || p.tokens == 0) return cudaSuccess;
  const bool half = p.dtype == FibDtype::kFloat16;
  if (MmaTileFor(tile_queries) == 64) {
    return half ? LaunchMmaRows<__half, 4>(p, overlap_dense_row, colsum_workspace, stream)
                : LaunchMmaRows<__nv_bfloat16, 4>(p, overlap_dense_row, colsum_workspace, stream);
  }
  return half ? LaunchMmaRows<__half, 8>(p, overlap_dense_row, colsum_workspace, stream)
              : LaunchMmaRows<__nv_bfloat16, 8>(p, overlap_dense_row, colsum_workspace, stream);
}

bool WholeHeadFibottentionSupports(const FibParams& p) {
  return HalfHeads64(p) && p.tokens <= kWholeMaxTokens;
}

cudaError_t LaunchWholeHeadFibottention(const FibParams& p, cudaStream_t stream) {
  if (!WholeHeadFibottentionSupports(p)) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.heads == 0 || p.tokens == 0) return cudaSuccess;
  if (p.dtype == FibDtype::kFloat16) return LaunchWholeHead<__half>(p, stream);
  return LaunchWholeHead<__nv_bfloat16>(p, stream);
}

}  // namespace vitserve::fibottention::internal
