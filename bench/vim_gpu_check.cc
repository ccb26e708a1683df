// vitserve-vim-gpu-check: the Vim CUDA kernels (selective scan, causal conv1d) and vim_tiny on
// CUDA against the CPU reference, at sequence lengths up to 6085 tokens (1248 px: 78² patches
// + the class token), in fp32 (max relative error ≤ 1e-5) and bf16 (≤ 1e-2), forward and
// reverse directions. One PASS/FAIL line per case; exit code 1 if any case fails.
// Relative error = max |cuda − reference| / max |reference| over the output tensor.
//
//   vitserve-vim-gpu-check [--channels 384] [--batch 2]
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <exception>
#include <cmath>
#include <stdexcept>
#include <string>

#include "absl/flags/flag.h"
#include "bench/bench_util.h"
#include "models/model_loader.h"
#include "models/registry.h"
#include "models/vim/selective_scan.h"
#include "models/vim/vim_models.h"

ABSL_FLAG(int, channels, 384, "Scan channels (vim_tiny's d_inner is 384).");
ABSL_FLAG(int, batch, 2, "Batch size of the kernel cases.");
ABSL_FLAG(bool, model, true, "Also compare the whole vim_tiny (fp32) at 224 and 512 px.");

namespace vitserve {
namespace {

int failures = 0;

void Report(const std::string& name, double error, double limit) {
  const bool pass = error <= limit;
  if (!pass) ++failures;
  std::printf("%s %-52s rel_err %.3e (limit %.0e)\n", pass ? "PASS" : "FAIL", name.c_str(), error,
              limit);
  std::fflush(stdout);
}

double RelError(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble).cpu(), w = want.to(at::kDouble).cpu();
  if (!at::isfinite(g).all().item<bool>()) return INFINITY;
  return ((g - w).abs().max() / w.abs().max().clamp_min(1e-30)).item<double>();
}

// Inputs in the ranges of a trained layer: Δ = softplus(·) mostly in [1e-3, 0.1], A = −(1..16).
vim::SelectiveScanInputs Inputs(int64_t batch, int64_t length, int64_t channels) {
  vim::SelectiveScanInputs in;
  in.u = at::randn({batch, length, channels});
  in.delta = at::randn({batch, length, channels}) * 0.5;
  in.A = -at::arange(1, 17, at::kFloat).repeat({channels, 1}) * (1 + 0.2 * at::rand({channels, 1}));
  in.B = at::randn({batch, length, 16});
  in.C = at::randn({batch, length, 16});
  in.D = at::randn({channels});
  in.z = at::randn({batch, length, channels});
  in.delta_bias = at::log(at::expm1(at::exp(at::rand({channels}) * (std::log(0.1) - std::log(1e-3)) +
                                            std::log(1e-3))));
  return in;
}

vim::SelectiveScanInputs To(vim::SelectiveScanInputs in, const at::Device& device,
                            at::ScalarType dtype) {
  for (at::Tensor* t : {&in.u, &in.delta, &in.B, &in.C, &in.z}) *t = t->to(device, dtype);
  for (at::Tensor* t : {&in.A, &in.D, &in.delta_bias}) *t = t->to(device);
  return in;
}

void CheckKernels() {
  const int64_t batch = absl::GetFlag(FLAGS_batch), channels = absl::GetFlag(FLAGS_channels);
  const at::Device cuda(at::kCUDA);
  // 224, 512, 1024, 1248 px with patch 16, class token included; plus odd lengths.
  for (const int64_t length : {1, 197, 1025, 4097, 6085}) {
    at::manual_seed(length);
    const vim::SelectiveScanInputs base = Inputs(batch, length, channels);
    for (const bool reverse : {false, true}) {
      for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        vim::SelectiveScanInputs cpu = To(base, at::kCPU, dtype);
        cpu.reverse = reverse;
        vim::SelectiveScanInputs gpu = To(base, cuda, dtype);
        gpu.reverse = reverse;
        const std::string name = std::string("scan ") + (dtype == at::kFloat ? "fp32" : "bf16") +
                                 (reverse ? " reverse" : " forward") + " L=" +
                                 std::to_string(length);
        Report(name, RelError(vim::SelectiveScan(gpu), vim::SelectiveScanReference(cpu)),
               dtype == at::kFloat ? 1e-5 : 1e-2);
      }
    }
    const at::Tensor xz = at::randn({batch, length, 2 * channels});
    const at::Tensor x = xz.narrow(2, 0, channels);  // strided, as in the model
    const at::Tensor w = at::randn({channels, 1, 4}) * 0.5, b = at::randn({channels});
    for (const bool reverse : {false, true}) {
      for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        const std::string name = std::string("conv ") + (dtype == at::kFloat ? "fp32" : "bf16") +
                                 (reverse ? " reverse" : " forward") + " L=" +
                                 std::to_string(length);
        Report(name,
               RelError(vim::CausalConv1dSilu(x.to(cuda, dtype), w.cuda(), b.cuda(), reverse),
                        vim::CausalConv1dSiluReference(x.to(dtype), w, b, reverse)),
               dtype == at::kFloat ? 1e-5 : 1e-2);
      }
    }
  }
}

void CheckModel() {
  ModelRegistry registry;
  if (!RegisterVimModels(registry).ok()) throw std::runtime_error("registration failed");
  at::manual_seed(0);
  std::shared_ptr<VisionModel> model = registry.Create("vim_tiny").value();
  model->eval();
  at::globalContext().setAllowTF32CuBLAS(false);
  at::globalContext().setAllowTF32CuDNN(false);
  for (const int64_t size : {224, 512}) {
    const at::Tensor images = at::randn({2, 3, size, size});
    model->to(at::kCPU);
    const at::Tensor want = model->forward(images);
    model->to(at::kCUDA);
    const at::Tensor got = model->forward(images.cuda());
    // Whole network: matmul summation order differs between CPU and cuBLAS over 24 layers.
    Report("vim_tiny fp32 logits " + std::to_string(size) + "px (cuda vs cpu)", RelError(got, want),
           1e-3);
    model->to(at::kCUDA, at::kBFloat16);
    const at::Tensor low = model->forward(images.cuda().to(at::kBFloat16));
    Report("vim_tiny bf16 logits " + std::to_string(size) + "px (cuda vs cpu fp32)",
           RelError(low, want), 0.25);
    model->to(at::kCPU, at::kFloat);
  }
}

int Run() {
  if (!vim::HasCudaKernels() || !at::hasCUDA()) {
    std::printf("FAIL vim CUDA kernels: %s\n",
                vim::HasCudaKernels() ? "no GPU visible" : "built without CUDA");
    return 1;
  }
  c10::InferenceMode guard;
  CheckKernels();
  if (absl::GetFlag(FLAGS_model)) CheckModel();
  std::printf("%s: %d failure(s)\n", failures == 0 ? "ALL PASS" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  return vitserve::bench::RunBenchmark(
      argc, argv,
      "Vim CUDA kernels and model against the CPU reference.",
      vitserve::Run, "FAIL exception");
}
