// vitserve-bench-fibottention: the Fibottention kernel (models/fibottention/, evaluating only the
// kept query-key pairs) against dense at::scaled_dot_product_attention, per token count, at the
// ViT-B attention shape (12 heads × 64, class token + N patches, the layer-0 masks of the
// official construction). Prints ms per call, the kept fraction and the speed-up. With --check,
// it first compares the kernels with dense masked attention (the test reference, fp32) for
// both semantics at batch 2 and prints PASS/FAIL lines (the GPU check of the CUDA kernel).
//
//   vitserve-bench-fibottention --device cuda --precision fp16 --tokens 197,785,3137 --batch 64
//   vitserve-bench-fibottention --impls sdpa,fibottention,rowwarp,wholehead,tiled,tiled64x2
//   vitserve-bench-fibottention --device cpu --precision fp32 --tokens 197,785 --batch 4
//   vitserve-bench-fibottention --device cpu --staging --tokens 785,3137
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "models/fibottention/fibottention.h"

ABSL_FLAG(std::string, device, "cuda", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, precision, "fp16", "fp32, fp16 or bf16.");
ABSL_FLAG(std::string, tokens, "197,785,3137", "Token counts T = 1 + a square number.");
ABSL_FLAG(int, batch, 64, "Batch size.");
ABSL_FLAG(int, heads, 12, "Attention heads.");
ABSL_FLAG(int, head_dim, 64, "Channels per head.");
ABSL_FLAG(std::string, impls, "sdpa,fibottention",
          "sdpa, fibottention (the dispatcher's choice), gather, and on CUDA the kernels by name: "
          "rowwarp (one warp per query row), wholehead (one block per head, up to 320 tokens), "
          "tiled (the tiled kernel, its shape by token count), tiledRxN (R = 64 or 128 rows "
          "per block, N = 1, 2 or 4 threads per row), either with a pdl suffix (tiledpdl, "
          "tiled64x4pdl: the patch rows' kernel overlaps the class row's, overlap_dense_row, "
          "as the dispatcher does; without it, it runs after), "
          "mma (the tiled kernel's staging with the products on tensor cores; its default tile), "
          "mmaR (R = 64 or 128 rows per block), either with the pdl suffix too (mma64pdl).");
ABSL_FLAG(std::string, semantics, "official", "official or neginf.");
ABSL_FLAG(double, seconds, 2.0, "Measured time per case (after warm-up).");
ABSL_FLAG(int, warmup, 3, "Warm-up iterations per case.");
ABSL_FLAG(bool, check, false, "Compare with dense masked attention first (batch 2).");
ABSL_FLAG(int, check_max_tokens, 785, "Largest token count --check compares.");
ABSL_FLAG(bool, staging, false,
          "Print, per token count, the patch keys per patch row and the key rows the tiled "
          "kernel stages per patch row at 64, 128, 256 and 512 rows per block, and time "
          "nothing (any device).");

namespace vitserve {
namespace {

double SecondsPerCall(const std::function<void()>& call, const at::Device& device) {
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) call();
  const bench::Timing t =
      bench::TimeSteps(call, device, absl::GetFlag(FLAGS_seconds), /*min_iterations=*/1);
  return t.seconds / static_cast<double>(t.iterations);
}

// --staging: how many key and value rows the tiled kernel (fibottention_tiled_cuda.cu) stages,
// computed from the pattern by MergeKeyRanges' rule: a tile of patch rows [t0, t_end) stages
// the union of the ranges [t0 + s, t_end + s) of its head's shifts, clipped to the patch keys.
// Per patch row, against the patch keys the row keeps: how often a staged row is used.
void PrintStaging(const FibottentionPattern& pattern) {
  const at::Tensor shifts = pattern.shifts.cpu();
  const auto shift_of = shifts.accessor<int32_t, 2>();
  const int64_t prefix = pattern.class_token ? 1 : 0, tokens = pattern.tokens;
  const double patch_rows = static_cast<double>(pattern.heads * (tokens - prefix));
  // Keys in [lo, hi) ∩ [prefix, tokens), for ranges given in increasing order of lo.
  const auto union_length = [&](const std::vector<std::pair<int64_t, int64_t>>& ranges) {
    int64_t length = 0, lo = 0, hi = 0;  // The segment being merged, [lo, hi).
    for (auto [range_lo, range_hi] : ranges) {
      range_lo = std::max(range_lo, prefix);
      range_hi = std::min(range_hi, tokens);
      if (range_lo >= range_hi) continue;
      if (range_lo > hi) {
        length += hi - lo;
        lo = range_lo;
      }
      hi = std::max(hi, range_hi);
    }
    return length + (hi - lo);
  };
  // The pattern's key lists count, for each patch row, the class key (when there is one) and
  // its patch keys.
  const double patch_keys =
      pattern.count.slice(/*dim=*/1, prefix).sum().item<double>() - prefix * patch_rows;
  std::printf("T=%-5lld patch keys per patch row %.2f; staged key rows per patch row, by rows "
              "per block:",
              static_cast<long long>(tokens), patch_keys / patch_rows);
  for (int64_t tile : {64, 128, 256, 512}) {
    int64_t staged = 0;
    for (int64_t h = 0; h < pattern.heads; ++h) {
      for (int64_t t0 = prefix; t0 < tokens; t0 += tile) {
        const int64_t t_end = std::min(t0 + tile, tokens);
        std::vector<std::pair<int64_t, int64_t>> ranges;
        for (int64_t j = 0; j < shifts.size(1); ++j) {
          const int64_t s = shift_of[h][j];
          if (s != FibottentionPattern::kShiftPadding) ranges.emplace_back(t0 + s, t_end + s);
        }
        staged += union_length(ranges);
      }
    }
    std::printf(" %lld: %.2f", static_cast<long long>(tile),
                static_cast<double>(staged) / patch_rows);
  }
  std::printf("\n");
}

int Run() {
  const at::Device device(absl::GetFlag(FLAGS_device));
  const std::string precision = absl::GetFlag(FLAGS_precision);
  const at::ScalarType dtype = bench::ParsePrecision(precision);
  const auto semantics = absl::GetFlag(FLAGS_semantics) == "neginf"
                             ? FibottentionSemantics::kNegInf
                             : FibottentionSemantics::kOfficial;
  const int64_t heads = absl::GetFlag(FLAGS_heads), dim = absl::GetFlag(FLAGS_head_dim);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const std::vector<std::string> impls = absl::StrSplit(absl::GetFlag(FLAGS_impls), ',');
  c10::InferenceMode guard;
  int failures = 0;
  std::printf("device %s  precision %s  batch %d  heads %lld × %lld  semantics %s\n",
              device.str().c_str(), precision.c_str(), absl::GetFlag(FLAGS_batch),
              static_cast<long long>(heads), static_cast<long long>(dim),
              absl::GetFlag(FLAGS_semantics).c_str());
  for (absl::string_view text : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int64_t tokens = 0;
    if (!absl::SimpleAtoi(text, &tokens) || tokens < 2) {
      std::fprintf(stderr, "error: bad token count '%s'\n", std::string(text).c_str());
      return 2;
    }
    const int64_t patches = tokens - 1;
    const auto offsets = FibottentionLayerOffsets(patches, heads, 0);
    const FibottentionPattern pattern =
        PatternTo(MakeFibottentionPattern(offsets, patches), device);
    const double kept = pattern.count.to(at::kDouble).sum().item<double>() /
                        static_cast<double>(heads * tokens * tokens);
    if (absl::GetFlag(FLAGS_staging)) {
      PrintStaging(pattern);
      continue;
    }
    if (absl::GetFlag(FLAGS_check) && tokens <= absl::GetFlag(FLAGS_check_max_tokens)) {
      const at::Tensor mask = FibottentionDenseMask(offsets, patches).to(device);
      const auto opts = at::TensorOptions().device(device).dtype(at::kFloat);
      const at::Tensor q = at::randn({2, heads, tokens, dim}, opts);
      const at::Tensor k = at::randn({2, heads, tokens, dim}, opts);
      const at::Tensor v = at::randn({2, heads, tokens, dim}, opts);
      for (auto sem : {FibottentionSemantics::kOfficial, FibottentionSemantics::kNegInf}) {
        const at::Tensor dense = DenseMaskedAttention(q, k, v, mask, sem, scale);
        std::vector<at::ScalarType> dtypes{at::kFloat};
        if (dtype != at::kFloat) dtypes.push_back(dtype);
        for (at::ScalarType t : dtypes) {
          const at::Tensor got =
              FibottentionAttention(q.to(t), k.to(t), v.to(t), pattern, sem, scale).to(at::kFloat);
          const float err = (got - dense).abs().max().item<float>();
          const float tol = t == at::kFloat ? 1e-4f : 3e-2f;
          const bool ok = err <= tol;
          failures += ok ? 0 : 1;
          std::printf("%s check T=%lld %s %s: max |err| %.2e (tol %.0e)\n", ok ? "PASS" : "FAIL",
                      static_cast<long long>(tokens),
                      sem == FibottentionSemantics::kOfficial ? "official" : "neginf",
                      c10::toString(t), err, tol);
        }
      }
    }
    const auto opts = at::TensorOptions().device(device).dtype(dtype);
    const int64_t batch = absl::GetFlag(FLAGS_batch);
    const at::Tensor q = at::randn({batch, heads, tokens, dim}, opts);
    const at::Tensor k = at::randn({batch, heads, tokens, dim}, opts);
    const at::Tensor v = at::randn({batch, heads, tokens, dim}, opts);
    double sdpa_s = 0;
    for (const std::string& impl : impls) {
      std::function<void()> call;
      if (impl == "sdpa") {
        call = [&] { at::scaled_dot_product_attention(q, k, v); };
      } else if (impl == "fibottention") {
        call = [&] { FibottentionAttention(q, k, v, pattern, semantics, scale); };
      } else if (impl == "gather") {
        call = [&] { FibottentionAttentionGather(q, k, v, pattern, semantics, scale); };
      } else if (impl == "rowwarp" || impl == "wholehead" || impl.rfind("mma", 0) == 0 ||
                 impl.rfind("tiled", 0) == 0) {
        // The CUDA kernels by name; tiled: the dispatcher's shape, tiledRxN: R rows per block,
        // N threads per row; a "pdl" suffix on either: overlap_dense_row.
        using Kernel = FibottentionCudaOptions::Kernel;
        FibottentionCudaOptions options;
        options.kernel = impl == "rowwarp"     ? Kernel::kRowPerWarp
                         : impl == "wholehead" ? Kernel::kWholeHead
                         : impl.rfind("mma", 0) == 0 ? Kernel::kTensorCore
                                                     : Kernel::kTiled;
        std::string spec = options.kernel == Kernel::kTiled        ? impl.substr(5)
                           : options.kernel == Kernel::kTensorCore ? impl.substr(3)
                                                                   : "";
        const absl::string_view overlap_suffix = "pdl";
        options.overlap_dense_row = false;
        if (absl::EndsWith(spec, overlap_suffix)) {
          options.overlap_dense_row = true;
          spec.resize(spec.size() - overlap_suffix.size());
        }
        const std::vector<std::string> shape = absl::StrSplit(spec, 'x');
        if (options.kernel == Kernel::kTiled && !spec.empty() &&
            (shape.size() != 2 || !absl::SimpleAtoi(shape[0], &options.tile_queries) ||
             !absl::SimpleAtoi(shape[1], &options.threads_per_row))) {
          options.tile_queries = -1;  // Refused by the kernel: reported as failed.
        }
        // mmaR: R rows per block.
        if (options.kernel == Kernel::kTensorCore && !spec.empty() &&
            !absl::SimpleAtoi(spec, &options.tile_queries)) {
          options.tile_queries = -1;
        }
        call = [&q, &k, &v, &pattern, semantics, scale, options] {
          FibottentionAttentionCuda(q, k, v, pattern, semantics, scale, options);
        };
      } else {
        std::fprintf(stderr, "error: unknown impl '%s'\n", impl.c_str());
        return 2;
      }
      double s = 0;
      try {
        s = SecondsPerCall(call, device);
      } catch (const c10::Error& e) {
        std::printf("T=%-5lld %-13s failed: %s\n", static_cast<long long>(tokens), impl.c_str(),
                    e.what_without_backtrace());
        continue;
      }
      if (impl == "sdpa") sdpa_s = s;
      std::printf("T=%-5lld %-13s %9.3f ms  kept %.2f%%%s\n", static_cast<long long>(tokens),
                  impl.c_str(), s * 1e3, 100.0 * kept,
                  sdpa_s > 0 && impl != "sdpa"
                      ? (std::string("  ") + std::to_string(sdpa_s / s) + "x vs sdpa").c_str()
                      : "");
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  return vitserve::bench::RunBenchmark(
      argc, argv,
      "Fibottention kernel vs dense SDPA.",
      vitserve::Run);
}
