// vitserve-bench-vim-ops: where the time of one Vision Mamba layer goes. Times each operator of
// a bidirectional block on tensors of the shapes vim_tiny/vim_small produce for a given input
// size and batch (random values, same dtype as the model would run), and prints ms per call
// and ms per forward pass (calls per layer × depth), so the table shows which operator bounds
// the model. The operators are the ones vision_mamba.cc calls, in its order; on CUDA the scan
// is also timed with fixed chunk counts of the chunked kernel (SelectiveScanInputs::chunks), and
// with each kernel (SelectiveScanInputs::kernel; "br-free" rows: kChunkedBranchFree, "split"
// rows: kSplitStates; "chunked" rows: kChunked).
//
//   vitserve-bench-vim-ops --image_size 224 --batch 128 --precision fp16
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "bench/bench_util.h"
#include "models/vim/selective_scan.h"

ABSL_FLAG(int, image_size, 224, "Input side in pixels (16-px patches, plus the class token).");
ABSL_FLAG(int, batch, 128, "Batch size.");
ABSL_FLAG(int, embed_dim, 192, "Model width D (192 vim_tiny, 384 vim_small).");
ABSL_FLAG(int, depth, 24, "Layers per forward pass.");
ABSL_FLAG(std::string, precision, "fp16", "fp32, fp16 or bf16.");
ABSL_FLAG(std::string, device, "cuda", "cuda or cpu.");
ABSL_FLAG(double, seconds, 0.5, "Measured time per operator.");
ABSL_FLAG(std::string, scan_kernel, "auto",
          "Kernel of the \"selective scan\" row (CUDA): auto, chunked, branch-free or "
          "split-states (so that a profiler that skips the first launches catches the one asked "
          "for).");

namespace vitserve {
namespace {

// calls_per_layer 0: an alternative to the line above it (not added to the sum).
struct Op {
  std::string name;
  int calls_per_layer;
  std::function<void()> run;
};

vim::SelectiveScanInputs WithKernel(vim::SelectiveScanInputs in, vim::ScanKernelChoice kernel,
                                    int chunks = 0) {
  in.kernel = kernel;
  in.chunks = chunks;
  return in;
}

// The backward scan as the model runs it: averaged with the forward output inside the kernel.
vim::SelectiveScanInputs Averaged(vim::SelectiveScanInputs in, const at::Tensor& forward_out) {
  in.average_with = forward_out;
  return in;
}

int Run() {
  const at::Device device(absl::GetFlag(FLAGS_device));
  const at::ScalarType dtype = bench::ParsePrecision(absl::GetFlag(FLAGS_precision));
  const int64_t batch = absl::GetFlag(FLAGS_batch), dim = absl::GetFlag(FLAGS_embed_dim);
  const int64_t grid = absl::GetFlag(FLAGS_image_size) / 16;
  const int64_t length = grid * grid + 1, inner = 2 * dim, state = 16, dt_rank = (dim + 15) / 16;
  const int depth = absl::GetFlag(FLAGS_depth);
  if (device.is_cuda()) at::globalContext().setAllowTF32CuBLAS(false);
  c10::InferenceMode guard;
  const auto opts = at::TensorOptions().device(device).dtype(dtype);
  constexpr vim::ScanKernelChoice kChunked = vim::ScanKernelChoice::kChunked;
  constexpr vim::ScanKernelChoice kBranchFree = vim::ScanKernelChoice::kChunkedBranchFree;
  constexpr vim::ScanKernelChoice kSplit = vim::ScanKernelChoice::kSplitStates;
  const auto fp32 = at::TensorOptions().device(device).dtype(at::kFloat);

  // Weights (nn.Linear layout [out, in]) and activations as the block produces them.
  const at::Tensor in_proj = at::randn({2 * inner, dim}, opts) * 0.05;
  const at::Tensor x_proj = at::randn({dt_rank + 2 * state, inner}, opts) * 0.05;
  const at::Tensor dt_proj = at::randn({inner, dt_rank}, opts) * 0.2;
  const at::Tensor out_proj = at::randn({dim, inner}, opts) * 0.05;
  const at::Tensor conv_w = at::randn({inner, 1, 4}, opts) * 0.3;
  const at::Tensor conv_b = at::zeros({inner}, opts);
  const at::Tensor norm_w = at::ones({dim}, opts);
  const at::Tensor hidden = at::randn({batch, length, dim}, opts);
  const at::Tensor residual = at::randn({batch, length, dim}, fp32);
  const at::Tensor xz = at::linear(hidden, in_proj);
  const at::Tensor x = xz.narrow(2, 0, inner), z = xz.narrow(2, inner, inner);
  const at::Tensor u = vim::CausalConv1dSilu(x, conv_w, conv_b, false);
  const at::Tensor x_dbl = at::linear(u, x_proj);
  vim::SelectiveScanInputs in;
  in.u = u;
  in.delta = at::linear(x_dbl.narrow(2, 0, dt_rank), dt_proj);
  // The parameters as the model passes them: stored in its dtype, A as A_log (S4D-real init).
  in.A_log = at::log(at::arange(1, state + 1, fp32)).repeat({inner, 1}).to(dtype);
  in.B = x_dbl.narrow(2, dt_rank, state);
  in.C = x_dbl.narrow(2, dt_rank + state, state);
  in.D = at::ones({inner}, opts);
  in.z = z;
  in.delta_bias = at::full({inner}, -4.0, opts);
  const std::string scan_kernel = absl::GetFlag(FLAGS_scan_kernel);
  if (scan_kernel == "chunked") {
    in.kernel = kChunked;
  } else if (scan_kernel == "branch-free") {
    in.kernel = kBranchFree;
  } else if (scan_kernel == "split-states") {
    in.kernel = kSplit;
  } else if (scan_kernel != "auto") {
    std::fprintf(stderr, "--scan_kernel: auto, chunked, branch-free or split-states, not '%s'\n",
                 scan_kernel.c_str());
    return 2;
  }
  at::Tensor y = vim::SelectiveScan(in);

  const std::vector<Op> ops = {
      {"add+rmsnorm", 1,
       [&] {
         at::Tensor r = residual;
         (void)vim::AddRmsNorm(hidden, r, norm_w, 1e-5);
       }},
      {"in_proj", 1, [&] { (void)at::linear(hidden, in_proj); }},
      {"conv1d+silu", 2, [&] { (void)vim::CausalConv1dSilu(x, conv_w, conv_b, false); }},
      {"x_proj", 2, [&] { (void)at::linear(u, x_proj); }},
      {"dt_proj", 2, [&] { (void)at::linear(x_dbl.narrow(2, 0, dt_rank), dt_proj); }},
      {"selective scan", 2, [&] { (void)vim::SelectiveScan(in); }},
      {"  chunked", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked)); }},
      {"  chunked avg", 0,
       [&] { (void)vim::SelectiveScan(Averaged(WithKernel(in, kChunked), y)); }},
      {"  chunks=1", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 1)); }},
      {"  chunks=2", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 2)); }},
      {"  chunks=4", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 4)); }},
      {"  chunks=8", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 8)); }},
      {"  chunks=16", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 16)); }},
      {"  chunks=32", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 32)); }},
      {"  chunks=64", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kChunked, 64)); }},
      {"  averaged", 0, [&] { (void)vim::SelectiveScan(Averaged(in, y)); }},
      {"  branch-free", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kBranchFree)); }},
      {"  br-free avg", 0,
       [&] { (void)vim::SelectiveScan(Averaged(WithKernel(in, kBranchFree), y)); }},
      {"  br-free ch=1", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kBranchFree, 1)); }},
      {"  br-free ch=16", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kBranchFree, 16)); }},
      {"  br-free ch=32", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kBranchFree, 32)); }},
      {"  br-free ch=64", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kBranchFree, 64)); }},
      {"  split", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kSplit)); }},
      {"  split avg", 0, [&] { (void)vim::SelectiveScan(Averaged(WithKernel(in, kSplit), y)); }},
      {"  split ch=1", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kSplit, 1)); }},
      {"  split ch=4", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kSplit, 4)); }},
      {"  split ch=16", 0, [&] { (void)vim::SelectiveScan(WithKernel(in, kSplit, 16)); }},
      {"out_proj", 1, [&] { (void)at::linear(y, out_proj); }},
  };
  std::printf("device %s  precision %s  batch %lld  tokens %lld  D %lld  d_inner %lld  depth %d\n",
              device.str().c_str(), absl::GetFlag(FLAGS_precision).c_str(),
              static_cast<long long>(batch), static_cast<long long>(length),
              static_cast<long long>(dim), static_cast<long long>(inner), depth);
  std::printf("%-16s %8s %12s %14s\n", "operator", "calls", "ms/call", "ms/forward");
  double total = 0;
  for (const Op& op : ops) {
    for (int w = 0; w < 3; ++w) op.run();
    const bench::Timing t =
        bench::TimeSteps(op.run, device, absl::GetFlag(FLAGS_seconds), /*min_iterations=*/5,
                         /*sync_every=*/10);
    const double ms = 1000.0 * t.seconds / t.iterations;
    if (op.calls_per_layer == 0) {
      std::printf("%-16s %8s %12.4f\n", op.name.c_str(), "", ms);
      continue;
    }
    const double per_forward = ms * op.calls_per_layer * depth;
    total += per_forward;
    std::printf("%-16s %8d %12.4f %14.3f\n", op.name.c_str(), op.calls_per_layer * depth, ms,
                per_forward);
  }
  std::printf("%-16s %8s %12s %14.3f\n", "sum", "", "", total);
  return 0;
}

}  // namespace
}  // namespace vitserve

int main(int argc, char** argv) {
  return vitserve::bench::RunBenchmark(
      argc, argv,
      "Per-operator time of a Vision Mamba layer at a given input size and batch.\n"
      "  vitserve-bench-vim-ops --image_size 224 --batch 128 --precision fp16",
      vitserve::Run);
}
