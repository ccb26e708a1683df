#include "models/fibottention/fibottention.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <string>
#include <vector>

#include "models/fibottention/fibottention_models.h"
#include "models/fibottention/fibottention_vit.h"
#include "models/registry.h"
#include "models/weights/state_dict.h"

namespace vitserve {
namespace {

using ::testing::ElementsAre;
using Offsets = std::vector<std::vector<int64_t>>;

// Hand computation for N = 30 patch tokens, h = 3 heads, w_min = 5, w_max = 30 // 3 = 10:
//   i=1: ⌊φ⌋=1, a=⌊1·φ⌋=1, b=⌊1·φ²⌋=2,  w=5+int(2.5·0)=5  → 1,2,3,5,(8) → [1,2,3,5]
//   i=2: ⌊2φ⌋=3, a=⌊3φ⌋=4, b=⌊3φ²⌋=7,  w=5+int(2.5·1)=7  → 4,7,(11)    → [4,7]
//   i=3: ⌊3φ⌋=4, a=⌊4φ⌋=6, b=⌊4φ²⌋=10, w=5+int(2.5·2)=10 → 6,10,(16)   → [6,10]
TEST(FibottentionMaskTest, HeadOffsetsMatchHandComputation) {
  EXPECT_EQ(FibottentionHeadOffsets(30, 3), (Offsets{{1, 2, 3, 5}, {4, 7}, {6, 10}}));
}

// The official generate_head_indices(N=196, h=12, wmin=5, is_modified=False) and (h=6,
// is_modified=True), printed by the released fibottention.py.
TEST(FibottentionMaskTest, HeadOffsetsMatchOfficialCodeAt196Tokens) {
  EXPECT_EQ(FibottentionHeadOffsets(196, 12), (Offsets{{1, 2, 3, 5},
                                                       {4, 7},
                                                       {6, 10},
                                                       {9, 15},
                                                       {12, 20},
                                                       {14, 23},
                                                       {17, 28},
                                                       {19, 31},
                                                       {22, 36},
                                                       {25, 41},
                                                       {27, 44},
                                                       {30, 49}}));
  EXPECT_EQ(FibottentionHeadOffsets(196, 6), (Offsets{{1, 2, 3, 5},
                                                      {4, 7, 11},
                                                      {6, 10, 16, 26},
                                                      {9, 15, 24, 39},
                                                      {12, 20, 32, 52},
                                                      {14, 23, 37, 60}}));
  EXPECT_EQ(FibottentionHeadOffsets(196, 6, 5, /*modified=*/true),
            (Offsets{{0, 1, 1, 2, 3, 5},
                     {1, 3, 4, 7, 11},
                     {2, 4, 6, 10, 16, 26},
                     {3, 6, 9, 15, 24, 39},
                     {4, 8, 12, 20, 32, 52},
                     {5, 9, 14, 23, 37, 60}}));
}

// Python 3: `random.seed(d); x = list(range(n)); random.shuffle(x); print(x)`.
TEST(FibottentionMaskTest, HeadPermutationsMatchPythonRandomShuffle) {
  EXPECT_THAT(PythonShuffledRange(12, 0), ElementsAre(1, 9, 8, 5, 10, 2, 3, 7, 4, 0, 11, 6));
  EXPECT_THAT(PythonShuffledRange(12, 1), ElementsAre(7, 11, 0, 8, 5, 6, 3, 10, 4, 1, 9, 2));
  EXPECT_THAT(PythonShuffledRange(12, 11), ElementsAre(2, 5, 0, 6, 10, 4, 1, 3, 9, 11, 8, 7));
  EXPECT_THAT(PythonShuffledRange(6, 0), ElementsAre(4, 2, 1, 0, 5, 3));
  EXPECT_THAT(PythonShuffledRange(6, 2), ElementsAre(2, 3, 1, 4, 5, 0));
  EXPECT_THAT(PythonShuffledRange(3, 0), ElementsAre(0, 2, 1));
  // shuffle(0, headindices) of the official code at N = 196, 12 heads.
  const Offsets layer0 = FibottentionLayerOffsets(196, 12, 0);
  EXPECT_EQ(layer0[0], (std::vector<int64_t>{4, 7}));
  EXPECT_EQ(layer0[9], (std::vector<int64_t>{1, 2, 3, 5}));
  EXPECT_EQ(layer0[11], (std::vector<int64_t>{17, 28}));
}

// Θ[j, j±o] = 1 on the patch order, class row and column all ones, no self diagonal.
TEST(FibottentionMaskTest, DenseMaskMatchesHandComputation) {
  const at::Tensor mask = FibottentionDenseMask({{1, 2}}, 6);
  ASSERT_EQ(mask.sizes(), (at::IntArrayRef{1, 7, 7}));
  // Token 1 (patch 0): patches 1, 2 → tokens 2, 3. Token 4 (patch 3): patches 2, 4, 1, 5.
  EXPECT_TRUE(at::equal(mask[0][1], at::tensor({1.f, 0.f, 1.f, 1.f, 0.f, 0.f, 0.f})));
  EXPECT_TRUE(at::equal(mask[0][4], at::tensor({1.f, 0.f, 1.f, 1.f, 0.f, 1.f, 1.f})));
  EXPECT_TRUE(at::equal(mask[0][0], at::ones({7})));
  EXPECT_EQ(mask[0].diagonal().sum().item<float>(), 1.f);  // Only the class token's.
  // The official get_mask_attn_wythoff(q [1,3,31,·], depth_id=0): per-head sums and one row.
  const at::Tensor official = FibottentionDenseMask(FibottentionLayerOffsets(30, 3, 0), 30);
  EXPECT_EQ(official[0].sum().item<float>(), 279.f);
  EXPECT_EQ(official[1].sum().item<float>(), 149.f);
  EXPECT_EQ(official[2].sum().item<float>(), 159.f);
  EXPECT_TRUE(at::equal(official[1][5].nonzero().flatten(), at::tensor({0, 11, 15}, at::kLong)));
}

// Plain and "modified" Wythoff offsets (the latter with a zero and a repeated offset), with and
// without a class token.
TEST(FibottentionMaskTest, PatternListsTheDenseMaskNonZeros) {
  for (bool modified : {false, true}) {
    for (bool class_token : {true, false}) {
      const Offsets offsets = FibottentionLayerOffsets(49, 6, 3, 5, modified);
      const at::Tensor mask = FibottentionDenseMask(offsets, 49, class_token);
      const FibottentionPattern pattern = MakeFibottentionPattern(offsets, 49, class_token);
      ASSERT_EQ(pattern.tokens, mask.size(1));
      for (int64_t h = 0; h < 6; ++h) {
        for (int64_t t = 0; t < pattern.tokens; ++t) {
          const int64_t c = pattern.count[h][t].item<int64_t>();
          const at::Tensor expected = mask[h][t].nonzero().flatten();
          if (class_token && t == 0) {
            EXPECT_EQ(c, pattern.tokens);
            continue;
          }
          ASSERT_EQ(c, expected.numel())
              << "modified " << modified << " head " << h << " row " << t;
          EXPECT_TRUE(at::equal(pattern.index[h][t].narrow(0, 0, c), expected));
        }
      }
    }
  }
}

// The shifts the tiled CUDA kernel reads name the same keys as the index lists, for plain and
// "modified" Wythoff offsets (the latter has a zero offset and a repeated one in its first
// head), with and without a class token.
TEST(FibottentionMaskTest, ShiftsListTheSameKeysAsTheIndexLists) {
  for (bool modified : {false, true}) {
    for (bool class_token : {true, false}) {
      const Offsets offsets = FibottentionLayerOffsets(49, 6, 3, 5, modified);
      const FibottentionPattern pattern = MakeFibottentionPattern(offsets, 49, class_token);
      const int64_t prefix = class_token ? 1 : 0;
      ASSERT_EQ(pattern.shifts.dim(), 2);
      ASSERT_EQ(pattern.shifts.size(0), 6);
      bool saw_zero_shift = false;
      for (int64_t h = 0; h < 6; ++h) {
        std::vector<int32_t> shifts;
        for (int64_t j = 0; j < pattern.shifts.size(1); ++j) {
          const int32_t s = pattern.shifts[h][j].item<int32_t>();
          if (s == FibottentionPattern::kShiftPadding) continue;
          ASSERT_TRUE(shifts.empty() || s > shifts.back()) << "head " << h << " not increasing";
          ASSERT_EQ(j, static_cast<int64_t>(shifts.size())) << "padding before a shift";
          saw_zero_shift = saw_zero_shift || s == 0;
          shifts.push_back(s);
        }
        for (int64_t t = prefix; t < pattern.tokens; ++t) {
          std::vector<int64_t> keys;
          if (class_token) keys.push_back(0);
          for (int32_t s : shifts) {
            if (t + s >= prefix && t + s < pattern.tokens) keys.push_back(t + s);
          }
          const int64_t c = pattern.count[h][t].item<int64_t>();
          const at::Tensor listed = pattern.index[h][t].narrow(0, 0, c).contiguous();
          EXPECT_EQ(keys, std::vector<int64_t>(listed.data_ptr<int64_t>(),
                                               listed.data_ptr<int64_t>() + c))
              << "modified " << modified << " class token " << class_token << " head " << h
              << " row " << t;
        }
      }
      EXPECT_EQ(saw_zero_shift, modified);
    }
  }
}

struct Qkv {
  at::Tensor q, k, v;
};
Qkv RandomQkv(int64_t batch, int64_t heads, int64_t tokens, int64_t dim, double q_gain = 1.0) {
  at::manual_seed(7);
  return {at::randn({batch, heads, tokens, dim}) * q_gain, at::randn({batch, heads, tokens, dim}),
          at::randn({batch, heads, tokens, dim})};
}

void ExpectKernelsMatchDense(int64_t patches, int64_t heads, int64_t dim, double q_gain) {
  const Offsets offsets = FibottentionLayerOffsets(patches, heads, 1);
  const at::Tensor mask = FibottentionDenseMask(offsets, patches);
  const FibottentionPattern pattern = MakeFibottentionPattern(offsets, patches);
  const Qkv x = RandomQkv(2, heads, patches + 1, dim, q_gain);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  for (auto semantics : {FibottentionSemantics::kOfficial, FibottentionSemantics::kNegInf}) {
    const at::Tensor dense = DenseMaskedAttention(x.q, x.k, x.v, mask, semantics, scale);
    const at::Tensor cpu = FibottentionAttentionCpu(x.q, x.k, x.v, pattern, semantics, scale);
    const at::Tensor gather = FibottentionAttentionGather(x.q, x.k, x.v, pattern, semantics, scale);
    const at::Tensor dispatched = FibottentionAttention(x.q, x.k, x.v, pattern, semantics, scale);
    const std::string what = "semantics " + std::to_string(static_cast<int>(semantics));
    EXPECT_LE((cpu - dense).abs().max().item<float>(), 1e-5f) << what;
    EXPECT_LE((gather - dense).abs().max().item<float>(), 1e-5f) << what;
    EXPECT_TRUE(at::equal(dispatched, cpu)) << what;
  }
  // The two semantics really differ (masked pairs keep weight in the official one).
  EXPECT_GT((DenseMaskedAttention(x.q, x.k, x.v, mask, FibottentionSemantics::kOfficial, scale) -
             DenseMaskedAttention(x.q, x.k, x.v, mask, FibottentionSemantics::kNegInf, scale))
                .abs()
                .max()
                .item<float>(),
            1e-2f);
}

TEST(FibottentionKernelTest, MatchesDenseMaskedAttentionSmall) {
  ExpectKernelsMatchDense(30, 3, 8, 1.0);
}

TEST(FibottentionKernelTest, MatchesDenseMaskedAttentionDeitSmallShape) {
  ExpectKernelsMatchDense(196, 6, 64, 1.0);
}

// Large logits of both signs: the running max must include the masked pairs' logit 0.
TEST(FibottentionKernelTest, StaysExactWithLargeLogits) {
  ExpectKernelsMatchDense(49, 6, 16, 12.0);
}

TEST(FibottentionKernelTest, HalfInputsRunThroughTheFloatKernel) {
  const Offsets offsets = FibottentionLayerOffsets(30, 3, 0);
  const FibottentionPattern pattern = MakeFibottentionPattern(offsets, 30);
  const Qkv x = RandomQkv(1, 3, 31, 8);
  const at::Tensor half =
      FibottentionAttention(x.q.to(at::kBFloat16), x.k.to(at::kBFloat16), x.v.to(at::kBFloat16),
                            pattern, FibottentionSemantics::kOfficial, 0.35);
  EXPECT_EQ(half.scalar_type(), at::kBFloat16);
  const at::Tensor dense = DenseMaskedAttention(x.q, x.k, x.v, FibottentionDenseMask(offsets, 30),
                                                FibottentionSemantics::kOfficial, 0.35);
  EXPECT_LE((half.to(at::kFloat) - dense).abs().max().item<float>(), 5e-2f);
}

// The CUDA kernel (through the dispatcher) against dense masked attention on the CPU, ViT-B's
// head shape, both semantics. The reference gets the same rounded inputs as the kernel (so a
// bf16 run measures the kernel, not the rounding of q and k), and the error is relative to the
// largest output: the official semantics add Σ V over all keys and subtract the kept part, so
// fp32 rounding scales with V, not with each output. fp32 1e-5, fp16 / bf16 1e-2 (the output
// itself is rounded to 8 or 11 bits). Runs only on a CUDA host.
TEST(FibottentionKernelCudaTest, CudaKernelMatchesDenseMaskedAttention) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (int64_t patches : {196, 784}) {
    const Offsets offsets = FibottentionLayerOffsets(patches, 12, 0);
    const at::Tensor mask = FibottentionDenseMask(offsets, patches);
    const FibottentionPattern pattern = PatternTo(MakeFibottentionPattern(offsets, patches),
                                                  at::Device(at::kCUDA, 0));
    const Qkv x = RandomQkv(2, 12, patches + 1, 64, 4.0);
    const double scale = 0.125;
    for (auto semantics : {FibottentionSemantics::kOfficial, FibottentionSemantics::kNegInf}) {
      for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
        const auto rounded = [dtype](const at::Tensor& t) { return t.to(dtype).to(at::kFloat); };
        const at::Tensor dense = DenseMaskedAttention(rounded(x.q), rounded(x.k), rounded(x.v),
                                                      mask, semantics, scale);
        const auto on_gpu = [dtype](const at::Tensor& t) { return t.to(at::kCUDA).to(dtype); };
        const at::Tensor out = FibottentionAttention(on_gpu(x.q), on_gpu(x.k), on_gpu(x.v),
                                                     pattern, semantics, scale);
        ASSERT_EQ(out.scalar_type(), dtype);
        const float error = ((out.to(at::kCPU).to(at::kFloat) - dense).abs().max() /
                             dense.abs().max())
                                .item<float>();
        EXPECT_LE(error, dtype == at::kFloat ? 1e-5f : 1e-2f)
            << "tokens " << patches + 1 << " semantics " << static_cast<int>(semantics)
            << " dtype " << c10::toString(dtype);
      }
    }
  }
}

// Head dims that make the kernel use 8, 16 and 32 lanes per key (and a ragged last slot).
TEST(FibottentionKernelCudaTest, EveryLaneGroupingMatchesDense) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t patches = 49;
  const Offsets offsets = FibottentionLayerOffsets(patches, 3, 2);
  const at::Tensor mask = FibottentionDenseMask(offsets, patches);
  const FibottentionPattern pattern = PatternTo(MakeFibottentionPattern(offsets, patches),
                                                at::Device(at::kCUDA, 0));
  for (int64_t dim : {24, 64, 100, 200}) {
    const Qkv x = RandomQkv(2, 3, patches + 1, dim, 2.0);
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    for (auto semantics : {FibottentionSemantics::kOfficial, FibottentionSemantics::kNegInf}) {
      const at::Tensor dense = DenseMaskedAttention(x.q, x.k, x.v, mask, semantics, scale);
      const at::Tensor out = FibottentionAttention(x.q.cuda(), x.k.cuda(), x.v.cuda(), pattern,
                                                   semantics, scale);
      const float error =
          ((out.cpu() - dense).abs().max() / dense.abs().max()).item<float>();
      EXPECT_LE(error, 1e-5f) << "dim " << dim << " semantics " << static_cast<int>(semantics);
    }
  }
}

// The tiled, whole-head and tensor-core kernels (head dim 64, fp16/bf16) against dense masked
// attention on the CPU and against the row-per-warp kernel: every tile shape, both semantics;
// ViT-B's token counts; fewer tokens than one tile (shifts past both ends); no class token;
// "modified" Wythoff offsets (a zero shift); large logits of both signs; 320 and 321 tokens
// (the whole-head kernel's limit). Error relative to the largest output, as above.
TEST(FibottentionKernelCudaTest, TiledKernelMatchesDenseAndTheRowKernel) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t patches, heads, batch;
    bool class_token, modified;
    double q_gain;
  };
  const std::vector<Case> cases = {{196, 12, 2, true, false, 4.0}, {784, 3, 1, true, false, 4.0},
                                   {3136, 2, 1, true, false, 4.0}, {9, 4, 3, true, false, 4.0},
                                   {49, 6, 2, false, false, 4.0},  {100, 5, 2, true, true, 4.0},
                                   {300, 4, 1, false, true, 4.0},  {196, 3, 1, true, false, 12.0},
                                   {319, 2, 1, true, false, 4.0},  {320, 2, 1, true, false, 4.0}};
  using Kernel = FibottentionCudaOptions::Kernel;
  for (const Case& c : cases) {
    const Offsets offsets = FibottentionLayerOffsets(c.patches, c.heads, 1, 5, c.modified);
    const at::Tensor mask = FibottentionDenseMask(offsets, c.patches, c.class_token);
    const FibottentionPattern pattern = PatternTo(
        MakeFibottentionPattern(offsets, c.patches, c.class_token), at::Device(at::kCUDA, 0));
    const Qkv x = RandomQkv(c.batch, c.heads, pattern.tokens, 64, c.q_gain);
    for (auto semantics : {FibottentionSemantics::kOfficial, FibottentionSemantics::kNegInf}) {
      for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
        const auto rounded = [dtype](const at::Tensor& t) { return t.to(dtype).to(at::kFloat); };
        const at::Tensor dense = DenseMaskedAttention(rounded(x.q), rounded(x.k), rounded(x.v),
                                                      mask, semantics, 0.125);
        const auto on_gpu = [dtype](const at::Tensor& t) { return t.to(at::kCUDA).to(dtype); };
        const at::Tensor q = on_gpu(x.q), k = on_gpu(x.k), v = on_gpu(x.v);
        const at::Tensor row = FibottentionAttentionCuda(q, k, v, pattern, semantics, 0.125,
                                                         {Kernel::kRowPerWarp, 0, 0});
        // Every tiled shape, and the tensor-core kernel (asked for by name) at both tiles.
        for (const FibottentionCudaOptions& options : std::vector<FibottentionCudaOptions>{
                 {Kernel::kTiled, 64, 1}, {Kernel::kTiled, 64, 2}, {Kernel::kTiled, 64, 4},
                 {Kernel::kTiled, 128, 1}, {Kernel::kTiled, 128, 2}, {Kernel::kTiled, 128, 4},
                 {Kernel::kTensorCore, 64, 0}, {Kernel::kTensorCore, 128, 0}}) {
          const std::string what =
              std::string(options.kernel == Kernel::kTiled ? "tiled" : "tensor cores") +
              ", patches " + std::to_string(c.patches) + " class token " +
              std::to_string(c.class_token) + " modified " + std::to_string(c.modified) +
              " semantics " + std::to_string(static_cast<int>(semantics)) + " " +
              c10::toString(dtype) + " tile " + std::to_string(options.tile_queries) + " x " +
              std::to_string(options.threads_per_row);
          const at::Tensor out =
              FibottentionAttentionCuda(q, k, v, pattern, semantics, 0.125, options);
          ASSERT_EQ(out.scalar_type(), dtype) << what;
          const at::Tensor got = out.to(at::kCPU).to(at::kFloat);
          const float largest = dense.abs().max().item<float>();
          EXPECT_LE(((got - dense).abs().max() / largest).item<float>(), 1e-2f) << what;
          EXPECT_LE(((got - row.to(at::kCPU).to(at::kFloat)).abs().max() / largest)
                        .item<float>(),
                    1e-2f)
              << what;
          // The patch rows' kernel (tiled or tensor-core) overlapping the class row's
          // (programmatic dependent launch, the default) or launched after it: the same
          // kernels, so the same bits.
          ASSERT_TRUE(options.overlap_dense_row);
          FibottentionCudaOptions sequential = options;
          sequential.overlap_dense_row = false;
          EXPECT_TRUE(at::equal(
              FibottentionAttentionCuda(q, k, v, pattern, semantics, 0.125, sequential), out))
              << "not overlapped, " << what;
        }
        // The whole-head kernel where the sequence fits (at most 320 tokens), refused beyond.
        const bool fits = pattern.tokens <= 320;
        if (fits) {
          const at::Tensor whole = FibottentionAttentionCuda(q, k, v, pattern, semantics, 0.125,
                                                             {Kernel::kWholeHead, 0, 0});
          const at::Tensor got = whole.to(at::kCPU).to(at::kFloat);
          const float largest = dense.abs().max().item<float>();
          EXPECT_LE(((got - dense).abs().max() / largest).item<float>(), 1e-2f)
              << "whole head, patches " << c.patches << " " << c10::toString(dtype);
        } else {
          EXPECT_THROW(FibottentionAttentionCuda(q, k, v, pattern, semantics, 0.125,
                                                 {Kernel::kWholeHead, 0, 0}),
                       c10::Error);
        }
        // The dispatcher picks the whole-head kernel where it fits, else the tiled one (same
        // kernel, same bits).
        EXPECT_TRUE(at::equal(
            FibottentionAttention(q, k, v, pattern, semantics, 0.125),
            FibottentionAttentionCuda(q, k, v, pattern, semantics, 0.125,
                                      {fits ? Kernel::kWholeHead : Kernel::kTiled, 0, 0})))
            << "patches " << c.patches;
      }
    }
  }
}

// More shifts than a warp has lanes: the tiled kernels merge a tile's key ranges 32 shifts at a
// time (MergeKeyRanges), so here head 0's 90 shifts (offsets 1-45) make one segment across
// three groups, and head 1's 76 (offsets 1-20, 150-165, 500, 700) make several, two of which
// go on from one group into the next.
TEST(FibottentionKernelCudaTest, TiledKernelsMergeMoreShiftsThanAWarpHasLanes) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  constexpr int64_t kPatches = 784;
  Offsets offsets(2);
  for (int64_t o = 1; o <= 45; ++o) offsets[0].push_back(o);
  for (int64_t o = 1; o <= 20; ++o) offsets[1].push_back(o);
  for (int64_t o = 150; o <= 165; ++o) offsets[1].push_back(o);
  offsets[1].push_back(500);
  offsets[1].push_back(700);
  const at::Tensor mask = FibottentionDenseMask(offsets, kPatches);
  const FibottentionPattern pattern =
      PatternTo(MakeFibottentionPattern(offsets, kPatches), at::Device(at::kCUDA, 0));
  ASSERT_EQ(pattern.shifts.size(1), 90);
  const Qkv x = RandomQkv(2, 2, pattern.tokens, 64, 4.0);
  const auto rounded = [](const at::Tensor& t) { return t.to(at::kHalf).to(at::kFloat); };
  const auto on_gpu = [](const at::Tensor& t) { return t.to(at::kCUDA).to(at::kHalf); };
  using Kernel = FibottentionCudaOptions::Kernel;
  for (auto semantics : {FibottentionSemantics::kOfficial, FibottentionSemantics::kNegInf}) {
    const at::Tensor dense =
        DenseMaskedAttention(rounded(x.q), rounded(x.k), rounded(x.v), mask, semantics, 0.125);
    const float largest = dense.abs().max().item<float>();
    for (const FibottentionCudaOptions& options : std::vector<FibottentionCudaOptions>{
             {Kernel::kTiled, 64, 1}, {Kernel::kTiled, 64, 4}, {Kernel::kTiled, 128, 1},
             {Kernel::kTiled, 128, 2}, {Kernel::kTensorCore, 64, 0}}) {
      const at::Tensor got = FibottentionAttentionCuda(on_gpu(x.q), on_gpu(x.k), on_gpu(x.v),
                                                       pattern, semantics, 0.125, options)
                                 .to(at::kCPU)
                                 .to(at::kFloat);
      EXPECT_LE(((got - dense).abs().max() / largest).item<float>(), 1e-2f)
          << "semantics " << static_cast<int>(semantics) << " tile " << options.tile_queries
          << " x " << options.threads_per_row << " kernel " << static_cast<int>(options.kernel);
    }
  }
}

// Where the tiled, whole-head and tensor-core kernels do not apply, kAuto takes the row kernel
// (still exact) and kTiled / kWholeHead / kTensorCore refuse: fp32, head dim 32, fp16 tensors
// that start 2 bytes past a 16-byte boundary, and tile shapes the tiled kernel does not have.
TEST(FibottentionKernelCudaTest, TiledKernelRefusesWhatItCannotRun) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  using Kernel = FibottentionCudaOptions::Kernel;
  const int64_t patches = 49, heads = 3;
  const Offsets offsets = FibottentionLayerOffsets(patches, heads, 2);
  const at::Tensor mask = FibottentionDenseMask(offsets, patches);
  const FibottentionPattern pattern =
      PatternTo(MakeFibottentionPattern(offsets, patches), at::Device(at::kCUDA, 0));
  const auto misaligned = [](const at::Tensor& t) {
    const at::Tensor flat = at::empty({t.numel() + 8}, t.options());
    at::Tensor view = flat.narrow(0, 1, t.numel()).view(t.sizes());
    view.copy_(t);
    return view;
  };
  struct Case {
    int64_t dim;
    at::ScalarType dtype;
    bool misalign;
  };
  for (const Case& c : std::vector<Case>{{64, at::kFloat, false}, {32, at::kHalf, false},
                                         {64, at::kHalf, true}}) {
    const Qkv x = RandomQkv(2, heads, patches + 1, c.dim, 2.0);
    const auto on_gpu = [&](const at::Tensor& t) {
      const at::Tensor g = t.to(at::kCUDA).to(c.dtype);
      return c.misalign ? misaligned(g) : g;
    };
    const at::Tensor q = on_gpu(x.q), k = on_gpu(x.k), v = on_gpu(x.v);
    const std::string what = "dim " + std::to_string(c.dim) + " " + c10::toString(c.dtype) +
                             " misaligned " + std::to_string(c.misalign);
    for (Kernel kernel : {Kernel::kTiled, Kernel::kWholeHead, Kernel::kTensorCore}) {
      EXPECT_THROW(FibottentionAttentionCuda(q, k, v, pattern, FibottentionSemantics::kOfficial,
                                             0.2, {kernel, 0, 0}),
                   c10::Error)
          << what;
    }
    const auto rounded = [&](const at::Tensor& t) { return t.to(c.dtype).to(at::kFloat); };
    const at::Tensor dense = DenseMaskedAttention(rounded(x.q), rounded(x.k), rounded(x.v), mask,
                                                  FibottentionSemantics::kOfficial, 0.2);
    const at::Tensor got =
        FibottentionAttention(q, k, v, pattern, FibottentionSemantics::kOfficial, 0.2);
    EXPECT_LE(((got.cpu().to(at::kFloat) - dense).abs().max() / dense.abs().max()).item<float>(),
              c.dtype == at::kFloat ? 1e-5f : 1e-2f)
        << what;
  }
  // A shape the tiled or tensor-core kernel lacks is refused, not rounded to one it has.
  const Qkv x = RandomQkv(1, heads, patches + 1, 64);
  const at::Tensor q = x.q.to(at::kCUDA).to(at::kHalf), k = x.k.to(at::kCUDA).to(at::kHalf),
                   v = x.v.to(at::kCUDA).to(at::kHalf);
  for (const FibottentionCudaOptions& bad :
       {FibottentionCudaOptions{Kernel::kTiled, 100, 0},
        FibottentionCudaOptions{Kernel::kTiled, 0, 3},
        FibottentionCudaOptions{Kernel::kTensorCore, 32, 0},
        FibottentionCudaOptions{Kernel::kTensorCore, 0, 2}}) {
    EXPECT_THROW(FibottentionAttentionCuda(q, k, v, pattern, FibottentionSemantics::kOfficial,
                                           0.2, bad),
                 c10::Error)
        << bad.tile_queries << " rows x " << bad.threads_per_row;
  }
}

ModelRegistry FibRegistry() {
  ModelRegistry registry;
  EXPECT_TRUE(RegisterFibottentionModels(registry).ok());
  return registry;
}

TEST(FibottentionVitTest, RegistersNamesWithTimmPreprocessing) {
  ModelRegistry registry = FibRegistry();
  EXPECT_THAT(registry.Names(), ElementsAre("deit_small_fibottention", "vit_base_fibottention"));
  EXPECT_FLOAT_EQ(registry.FindInfo("deit_small_fibottention").value()->mean[0], 0.485f);
  EXPECT_FLOAT_EQ(registry.FindInfo("vit_base_fibottention").value()->mean[0], 0.5f);
  EXPECT_EQ(RegisterFibottentionModels(registry).code(), absl::StatusCode::kAlreadyExists);
}

// Same tensors, names and shapes as timm's DeiT-S / ViT-B, so their checkpoints load.
TEST(FibottentionVitTest, StateDictEqualsTimmDeitAndVit) {
  const ModelRegistry builtin = BuiltinModelRegistry();
  const ModelRegistry fib = FibRegistry();
  for (const auto& [ours, timm] :
       {std::pair<std::string, std::string>{"deit_small_fibottention", "deit_small_patch16_224"},
        {"vit_base_fibottention", "vit_base_patch16_224"}}) {
    const auto a = StateDictTensors(*fib.Create(ours).value());
    const auto b = StateDictTensors(*builtin.Create(timm).value());
    ASSERT_EQ(a.size(), b.size()) << ours;
    for (const auto& [name, tensor] : b) {
      ASSERT_EQ(a.count(name), 1u) << ours << " lacks " << name;
      EXPECT_EQ(a.at(name).sizes(), tensor.sizes()) << name;
    }
  }
}

TEST(FibottentionVitTest, ForwardShapesSemanticsAndDeterminism) {
  c10::InferenceMode guard;
  FibottentionVitConfig config;  // Small: 64 px, patch 16 → 16 patches; 2 blocks, 4 heads.
  config.img_size = 64;
  config.embed_dim = 64;
  config.depth = 2;
  config.num_heads = 4;
  config.num_classes = 10;
  at::manual_seed(1);
  auto model = MakeFibottentionVit(config);
  model->eval();
  config.semantics = FibottentionSemantics::kNegInf;
  at::manual_seed(1);
  auto neg_inf = MakeFibottentionVit(config);
  neg_inf->eval();
  for (int64_t batch : {1, 2}) {
    const at::Tensor images = at::randn({batch, 3, 64, 64});
    const at::Tensor logits = model->forward(images);
    EXPECT_EQ(logits.sizes(), (at::IntArrayRef{batch, 10}));
    EXPECT_TRUE(at::equal(logits, model->forward(images)));
    EXPECT_FALSE(at::allclose(logits, neg_inf->forward(images)));
  }
  EXPECT_THROW(model->forward(at::randn({1, 3, 32, 32})), c10::Error);
}

TEST(FibottentionVitTest, RegisteredModelsForwardAtBatchOne) {
  c10::InferenceMode guard;
  auto model = FibRegistry().Create("deit_small_fibottention").value();
  model->eval();
  EXPECT_EQ(model->forward(at::randn({1, 3, 224, 224})).sizes(), (at::IntArrayRef{1, 1000}));
}

}  // namespace
}  // namespace vitserve
