// vitserve-bench-model: model-only throughput and latency of a zoo model, the number that
// bounds what the server can reach. Input already on the device, random weights, as the anchor
// numbers in docs/benchmarks.md were taken with timm. Prints one line per batch size.
//
//   vitserve-bench-model --model shvit_s1 --device cuda --precision fp16 --batch-sizes 1,32,256
//   vitserve-bench-model --model deit_tiny_patch16_224 --cuda-graphs --batch-sizes 1,32
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "bench/bench_util.h"
#include "models/model_loader.h"
#include "models/registry.h"

#ifdef VITSERVE_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

ABSL_FLAG(std::string, model, "shvit_s1", "Registry name of the model.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N.");
ABSL_FLAG(std::string, precision, "fp32", "fp32, fp16 or bf16.");
ABSL_FLAG(std::string, batch_sizes, "1,8,32", "Comma-separated batch sizes.");
ABSL_FLAG(int, image_size, 0, "Input side in pixels (0: the model's default).");
ABSL_FLAG(double, seconds, 3.0, "Measured time per batch size (after warm-up).");
ABSL_FLAG(int, warmup, 5, "Warm-up iterations per batch size.");
ABSL_FLAG(bool, cuda_graphs, false, "Replay a CUDA graph captured per batch size (CUDA only).");
ABSL_FLAG(bool, no_fuse, false, "Keep BatchNorm unfolded.");

namespace vitserve {
namespace {

int Run() {
  const std::string model_name = absl::GetFlag(FLAGS_model);
  // Flags first, so a typo fails before the model is built.
  const std::vector<int64_t> batch_sizes =
      bench::ParsePositiveList(absl::GetFlag(FLAGS_batch_sizes));
  const at::ScalarType dtype = bench::ParsePrecision(absl::GetFlag(FLAGS_precision));
  ModelRegistry registry = BuiltinModelRegistry();
  LoadOptions options;
  options.fuse_for_inference = !absl::GetFlag(FLAGS_no_fuse);
  auto loaded = LoadModel(registry, model_name, options);
  if (!loaded.ok()) {
    std::fprintf(stderr, "error: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  const at::Device device(absl::GetFlag(FLAGS_device));
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (device.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(true);
    // TF32 stays off so fp32 numbers are true fp32.
    at::globalContext().setAllowTF32CuBLAS(false);
  }
  auto& model = *loaded->module;
  model.to(device, dtype);
  model.eval();
  const int64_t size = absl::GetFlag(FLAGS_image_size) > 0 ? absl::GetFlag(FLAGS_image_size)
                                                           : loaded->info.input_size;
  std::printf("model %s  params %.2fM  device %s  precision %s  input %lldpx  cuda_graphs %d\n",
              model_name.c_str(), loaded->parameter_count / 1e6, device.str().c_str(),
              precision.c_str(), static_cast<long long>(size), absl::GetFlag(FLAGS_cuda_graphs));
  std::printf("%6s %12s %12s %12s\n", "batch", "images/s", "ms/batch", "peak_MiB");

  for (const int64_t batch : batch_sizes) {
    c10::InferenceMode guard;
    at::Tensor input = at::randn({batch, 3, size, size}, at::TensorOptions().dtype(dtype).device(device));
    std::function<void()> step = [&] { (void)model.forward(input); };
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
