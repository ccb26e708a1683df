// vitserve-bench-vim-vs-deit: images/s and peak GPU memory of vim_tiny against deit_tiny
// (DeiT-Ti, our ViT implementation) at several input sizes, the comparison of the Vim paper's
// Fig. 1 (b)/(c) (arXiv 2401.09417: 2.8× faster, 86.8% less memory at 1248 px).
// DeiT's position embedding is made for each size directly (VitConfig.img_size), which costs
// the same as timm's interpolated embedding; Vim resamples its 224-px embedding per call, as
// serving it would. Random weights, input already on the device, eval + InferenceMode.
// A size whose batch runs out of memory prints "OOM" instead of numbers. deit_tiny uses
// scaled_dot_product_attention (fused, O(N) memory); deit_tiny_explicit materialises the
// attention matrix, as the DeiT code the paper measured did.
//
//   vitserve-bench-vim-vs-deit --sizes 224,512,1024,1248 --batch_sizes 128,32,8,8 --precision fp16
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "models/layers/vit_layers.h"
#include "models/registry.h"
#include "models/vim/vim_models.h"
#include "models/vit/vision_transformer.h"

ABSL_FLAG(std::string, sizes, "224,512,1024,1248", "Comma-separated input sides in pixels.");
ABSL_FLAG(std::string, batch_sizes, "128,32,8,8", "One batch size per input size.");
ABSL_FLAG(std::string, models, "vim_tiny,deit_tiny,deit_tiny_explicit",
          "vim_tiny, vim_small, deit_tiny, deit_small; a _explicit suffix (deit_tiny_explicit)\n"
          "materialises the attention matrix as timm 0.4 did (the Vim paper's DeiT baseline).");
ABSL_FLAG(std::string, precision, "fp16", "fp32, fp16 or bf16.");
ABSL_FLAG(std::string, device, "cuda", "cuda or cpu.");
ABSL_FLAG(double, seconds, 3.0, "Measured time per case (after warm-up).");
ABSL_FLAG(int, warmup, 3, "Warm-up iterations per case.");

namespace vitserve {
namespace {

// The attention of timm 0.4 (which DeiT's and Vim's code used): the [N, N] score matrix is
// materialised, (q·kᵀ)·scale → softmax → ·v. The Vim paper's DeiT numbers come from this form.
class ExplicitAttention : public vit_layers::AttentionImpl {
 public:
  using vit_layers::AttentionImpl::AttentionImpl;
  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    return at::matmul((at::matmul(q, k.transpose(-2, -1)) * scale).softmax(-1), v);
  }
};

std::shared_ptr<VisionModel> Build(const std::string& name, int64_t size,
                                   const ModelRegistry& registry) {
  const std::string base(absl::StripSuffix(name, "_explicit"));
  const bool explicit_attention = base.size() != name.size();
  if (base == "deit_tiny" || base == "deit_small") {
    VitConfig config;  // deit_{tiny,small}_patch16_224 widths, laid out for `size`.
    config.img_size = size;
    config.embed_dim = base == "deit_tiny" ? 192 : 384;
    config.num_heads = base == "deit_tiny" ? 3 : 6;
    if (!explicit_attention) return MakeVisionTransformer(config);
    return MakeVisionTransformer(config, [&config](int64_t /*layer*/) {
      return std::make_shared<ExplicitAttention>(config.embed_dim, config.num_heads);
    });
  }
  return registry.Create(name).value();
}

int Run() {
  const std::vector<int64_t> sizes = bench::ParsePositiveList(absl::GetFlag(FLAGS_sizes));
  const std::vector<int64_t> batches = bench::ParsePositiveList(absl::GetFlag(FLAGS_batch_sizes));
  if (batches.size() != sizes.size()) {
    std::fprintf(stderr, "error: --batch_sizes needs one entry per --sizes entry\n");
    return 2;
  }
  const at::Device device(absl::GetFlag(FLAGS_device));
  const std::string precision = absl::GetFlag(FLAGS_precision);
  const at::ScalarType dtype = bench::ParsePrecision(precision);
  if (device.is_cuda()) at::globalContext().setAllowTF32CuBLAS(false);
  ModelRegistry registry;
  if (!RegisterVimModels(registry).ok()) throw std::runtime_error("registration failed");
  std::printf("device %s  precision %s\n", device.str().c_str(), precision.c_str());
  std::printf("%-18s %6s %6s %7s %12s %12s %12s\n", "model", "px", "batch", "tokens", "images/s",
              "ms/batch", "peak_MiB");
  for (absl::string_view name_view : absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    const std::string name(name_view);
    for (size_t i = 0; i < sizes.size(); ++i) {
      const int64_t size = sizes[i], batch = batches[i];
      const int64_t tokens = (size / 16) * (size / 16) + 1;
      try {
        c10::InferenceMode guard;
        std::shared_ptr<VisionModel> model = Build(name, size, registry);
        model->to(device, dtype);
        model->eval();
        bench::ResetPeakMemory(device);
        const at::Tensor input =
            at::randn({batch, 3, size, size}, at::TensorOptions().dtype(dtype).device(device));
        for (int w = 0; w < absl::GetFlag(FLAGS_warmup); ++w) (void)model->forward(input);
        const bench::Timing t = bench::TimeSteps([&] { (void)model->forward(input); }, device,
                                                 absl::GetFlag(FLAGS_seconds));
        std::printf("%-18s %6lld %6lld %7lld %12.1f %12.2f %12.1f\n", name.c_str(),
                    static_cast<long long>(size), static_cast<long long>(batch),
                    static_cast<long long>(tokens), t.iterations * batch / t.seconds,
                    1000.0 * t.seconds / t.iterations, bench::PeakMemoryMiB(device));
      } catch (const std::exception& e) {
        const std::string what = e.what();
        const bool oom = what.find("out of memory") != std::string::npos;
        std::printf("%-18s %6lld %6lld %7lld %12s %12s %12s\n", name.c_str(),
                    static_cast<long long>(size), static_cast<long long>(batch),
                    static_cast<long long>(tokens), oom ? "OOM" : "ERROR", "-", "-");
        if (!oom) std::fprintf(stderr, "error: %s\n", what.c_str());
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  return vitserve::bench::RunBenchmark(
      argc, argv,
      "images/s and peak GPU memory, vim_tiny vs deit_tiny, per input size.\n"
      "  vitserve-bench-vim-vs-deit --sizes 224,512,1024,1248 --batch_sizes 128,32,8,8",
      vitserve::Run);
}
