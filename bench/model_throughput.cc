// vitserve-bench-model: model-only throughput and latency of a zoo model, the number that
// bounds what the server can reach. Input already on the device, random weights, as the anchor
// numbers in docs/benchmarks.md were taken with timm. Prints one line per batch size.
//
//   vitserve-bench-model --model shvit_s1 --device cuda --precision fp16 --batch-sizes 1,32,256
//   vitserve-bench-model --model deit_tiny_patch16_224 --cuda-graphs --batch-sizes 1,32
//   vitserve-bench-model --model deit_tiny_patch16_224 --device cuda --precision fp16
//     --channels-last --kernel-profile 10 --batch-sizes 256   (where the GPU time goes)
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "bench/bench_util.h"
#include "common/malloc_settings.h"
#include "models/model_loader.h"
#include "models/registry.h"
#include "models/vit/vision_transformer.h"
#include "models/vit/vit_models.h"

#ifdef VITSERVE_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

ABSL_FLAG(std::string, model, "shvit_s1", "Registry name of the model.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, precision, "fp32", "fp32, fp16 or bf16.");
ABSL_FLAG(std::string, batch_sizes, "1,8,32", "Comma-separated batch sizes.");
ABSL_FLAG(int, image_size, 0,
          "Input side in pixels (0: the model's default); a ViT/DeiT is built for that size.");
ABSL_FLAG(double, seconds, 3.0, "Measured time per batch size (after warm-up).");
ABSL_FLAG(int, warmup, 5, "Warm-up iterations per batch size.");
ABSL_FLAG(bool, cuda_graphs, false, "Replay a CUDA graph captured per batch size (CUDA only).");
ABSL_FLAG(bool, no_fuse, false, "Keep BatchNorm unfolded.");
ABSL_FLAG(bool, approximate_gelu, true,
          "ViT-family MLPs on CUDA in fp16/bf16: GELU in its tanh form inside the first matrix "
          "product, as vitserve's --approximate-gelu (default); false: exact GELU, a kernel of "
          "its own, as timm.");
ABSL_FLAG(bool, channels_last, false,
          "Convert the model's 4-D weights and the input to channels-last (NHWC), as timm's "
          "anchors and a channels-last server run.");
ABSL_FLAG(int, kernel_profile, 0,
          "After timing each batch size, run this many eager steps under the Kineto profiler "
          "(CUDA only) and print the GPU kernels by device time per step.");
ABSL_FLAG(int, kernel_profile_top, 25, "Kernels listed by --kernel-profile.");

namespace vitserve {
namespace {

// Runs `steps` calls of `step` under Kineto with CUDA activity and prints the kernels that took
// the most device time, per step: the same view as torch.profiler's key_averages() of a Python
// model, so the two can be compared kernel by kernel.
void PrintKernelProfile(const std::function<void()>& step, const at::Device& device, int steps,
                        int top) {
  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO);
  const std::set<prof::ActivityType> activities{prof::ActivityType::CPU,
                                                prof::ActivityType::CUDA};
  bench::Synchronize(device);
  torch::autograd::profiler::prepareProfiler(config, activities);
  torch::autograd::profiler::enableProfiler(config, activities);
  for (int i = 0; i < steps; ++i) step();
  bench::Synchronize(device);
  const std::unique_ptr<torch::autograd::profiler::ProfilerResult> result =
      torch::autograd::profiler::disableProfiler();
  struct Total {
    int64_t count = 0;
    uint64_t ns = 0;
  };
  std::map<std::string, Total> by_kernel;
  uint64_t all_ns = 0;
  for (const auto& event : result->events()) {
    if (event.deviceType() != c10::DeviceType::CUDA) continue;
    Total& total = by_kernel[event.name()];
    ++total.count;
    total.ns += event.durationNs();
    all_ns += event.durationNs();
  }
  std::vector<std::pair<std::string, Total>> rows(by_kernel.begin(), by_kernel.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::printf("  kernels, per step: %.1f us of device time in %zu kinds\n",
              all_ns / 1e3 / steps, rows.size());
  std::printf("  %10s %7s %6s  %s\n", "us/step", "calls", "share", "kernel");
  for (size_t i = 0; i < rows.size() && static_cast<int>(i) < top; ++i) {
    const auto& [name, total] = rows[i];
    std::printf("  %10.1f %7.1f %5.1f%%  %.110s\n", total.ns / 1e3 / steps,
                static_cast<double>(total.count) / steps, 100.0 * total.ns / std::max<uint64_t>(all_ns, 1),
                name.c_str());
  }
  std::fflush(stdout);
}

int Run() {
  const std::string model_name = absl::GetFlag(FLAGS_model);
  // Flags first, so a typo fails before the model is built.
  const std::vector<int64_t> batch_sizes =
      bench::ParsePositiveList(absl::GetFlag(FLAGS_batch_sizes));
  const at::ScalarType dtype = bench::ParsePrecision(absl::GetFlag(FLAGS_precision));
  ModelRegistry registry = BuiltinModelRegistry();
  LoadOptions options;
  options.fuse_for_inference = !absl::GetFlag(FLAGS_no_fuse);
  options.approximate_gelu = absl::GetFlag(FLAGS_approximate_gelu);
  auto loaded = LoadModel(registry, model_name, options);
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  const at::Device device(absl::GetFlag(FLAGS_device));
  // The server's malloc settings for CPU models, so that the model alone runs as it is served.
  if (device.is_cpu()) {
    if (absl::Status malloc_settings = KeepFreedMemoryForReuse(); !malloc_settings.ok()) {
      std::fprintf(stderr, "warning: %s\n", std::string(malloc_settings.message()).c_str());
    }
  }
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (device.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(true);
    // TF32 stays off so fp32 numbers are true fp32.
    at::globalContext().setAllowTF32CuBLAS(false);
  }
  // A ViT is laid out for its input size (the position embedding): at another --image-size it
  // is built for that size, as timm does with img_size (random weights either way).
  const int64_t requested_size = absl::GetFlag(FLAGS_image_size);
  if (requested_size > 0 && requested_size != loaded->info.input_size) {
    if (absl::StatusOr<VitConfig> vit = VitConfigForArchitecture(model_name); vit.ok()) {
      vit->img_size = requested_size;
      loaded->module = MakeVisionTransformer(*vit);
      loaded->module->eval();
    }
  }
  auto& model = *loaded->module;
  model.to(device, dtype);
  model.eval();
  const bool channels_last = absl::GetFlag(FLAGS_channels_last);
  const at::MemoryFormat format =
      channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  if (channels_last) {
    c10::NoGradGuard no_grad;
    for (at::Tensor& p : model.parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(format));
    }
  }
  const int64_t size = absl::GetFlag(FLAGS_image_size) > 0 ? absl::GetFlag(FLAGS_image_size)
                                                           : loaded->info.input_size;
  std::printf(
      "model %s  params %.2fM  device %s  precision %s  input %lldpx  cuda_graphs %d  "
      "channels_last %d  approximate_gelu %d\n",
      model_name.c_str(), loaded->parameter_count / 1e6, device.str().c_str(), precision.c_str(),
      static_cast<long long>(size), absl::GetFlag(FLAGS_cuda_graphs), channels_last,
      absl::GetFlag(FLAGS_approximate_gelu));
  std::printf("%6s %12s %12s %12s\n", "batch", "images/s", "ms/batch", "peak_MiB");

  for (const int64_t batch : batch_sizes) {
    c10::InferenceMode guard;
    at::Tensor input =
        at::randn({batch, 3, size, size}, at::TensorOptions().dtype(dtype).device(device))
            .contiguous(format);
    const std::function<void()> eager_step = [&] { (void)model.forward(input); };
    std::function<void()> step = eager_step;
#ifdef VITSERVE_WITH_CUDA
    std::optional<at::cuda::CUDAGraph> graph;
    std::optional<c10::cuda::CUDAStreamGuard> stream_guard;
    if (device.is_cuda()) {
      bench::ResetPeakMemory(device);
      // Graph capture and replay need a non-default stream; eager runs use it too.
      stream_guard.emplace(c10::cuda::getStreamFromPool(false, device.index()));
    }
#endif
    for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) step();
#ifdef VITSERVE_WITH_CUDA
    if (device.is_cuda() && absl::GetFlag(FLAGS_cuda_graphs)) {
      bench::Synchronize(device);
      graph.emplace();
      graph->capture_begin();
      (void)model.forward(input);
      graph->capture_end();
      step = [&] { graph->replay(); };
      step();
    }
#endif
    // Synchronise every few steps only, so the GPU queue stays full.
    const bench::Timing t = bench::TimeSteps(step, device, absl::GetFlag(FLAGS_seconds),
                                             /*min_iterations=*/5, /*sync_every=*/5);
    std::printf("%6lld %12.1f %12.3f %12.1f\n", static_cast<long long>(batch),
                t.iterations * batch / t.seconds, 1000.0 * t.seconds / t.iterations,
                bench::PeakMemoryMiB(device));
    std::fflush(stdout);
    if (absl::GetFlag(FLAGS_kernel_profile) > 0 && device.is_cuda()) {
      PrintKernelProfile(eager_step, device, absl::GetFlag(FLAGS_kernel_profile),
                         absl::GetFlag(FLAGS_kernel_profile_top));
    }
  }
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  return vitserve::bench::RunBenchmark(
      argc, argv,
      "Model-only throughput of a vitserve zoo model (random weights, input on the device).\n"
      "  vitserve-bench-model --model shvit_s1 --device cuda --precision fp16 --batch-sizes 1,32,256",
      vitserve::Run);
}
