#include "models/layers/linear_residual.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/modules/container/sequential.h>

#ifdef VITSERVE_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "models/layers/vit_layers.h"

namespace vitserve::layers {
namespace {

// A projection's operands as a ViT block sees them: outputs of order 1 added to a stream of
// order 2, so that a missing bias, a wrong row or a dropped residual would show.
struct Operands {
  at::Tensor input, weight, bias, residual;
};
Operands MakeOperands(at::IntArrayRef input_sizes, int64_t out_features, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t in_features = input_sizes.back();
  std::vector<int64_t> output_sizes = input_sizes.vec();
  output_sizes.back() = out_features;
  return {at::randn(input_sizes),
          at::randn({out_features, in_features}) / std::sqrt(static_cast<double>(in_features)),
          at::randn({out_features}) * 0.5, at::randn(output_sizes) * 2};
}

at::Tensor ATensAnswer(const Operands& o) {
  return at::add(o.residual, at::linear(o.input, o.weight, o.bias));
}

TEST(LinearPlusResidualTest, OnTheCpuIsATensLinearThenAdd) {
  c10::InferenceMode inference_mode;
  const Operands o = MakeOperands({2, 5, 192}, 192, 1);
  EXPECT_FALSE(LinearPlusResidualUsesCublasLt(o.input, o.weight, o.bias, o.residual));
  EXPECT_TRUE(at::equal(LinearPlusResidual(o.input, o.weight, o.bias, o.residual), ATensAnswer(o)));
  EXPECT_TRUE(at::equal(LinearPlusResidual(o.input, o.weight, at::Tensor(), o.residual),
                        at::add(o.residual, at::linear(o.input, o.weight))));
}

TEST(LinearTanhGeluTest, OnTheCpuIsATensLinearThenTanhGelu) {
  c10::InferenceMode inference_mode;
  const Operands o = MakeOperands({2, 5, 192}, 768, 11);
  EXPECT_FALSE(LinearTanhGeluUsesCublasLt(o.input, o.weight, o.bias));
  EXPECT_TRUE(at::equal(LinearTanhGelu(o.input, o.weight, o.bias),
                        at::gelu(at::linear(o.input, o.weight, o.bias), "tanh")));
  EXPECT_TRUE(at::equal(LinearTanhGelu(o.input, o.weight, at::Tensor()),
                        at::gelu(at::linear(o.input, o.weight), "tanh")));
}

// The pre-norm block adds each branch to its stream: x + attn(norm1(x)), then + mlp(norm2(.)).
TEST(LinearPlusResidualTest, BlockAddsBothBranchesToItsStream) {
  c10::InferenceMode inference_mode;
  vit_layers::Block block(64, 2, 256);
  for (auto& parameter : block->parameters()) parameter.normal_(0.0, 0.1);
  const at::Tensor x = at::randn({2, 9, 64});
  auto params = block->named_parameters();
  const auto norm = [&](const at::Tensor& t, const std::string& name) {
    return at::layer_norm(t, {64}, params[name + ".weight"], params[name + ".bias"],
                          vit_layers::kLayerNormEps);
  };
  const at::Tensor qkv = at::linear(norm(x, "norm1"), params["attn.qkv.weight"],
                                    params["attn.qkv.bias"])
                             .reshape({2, 9, 3, 2, 32})
                             .permute({2, 0, 3, 1, 4});
  const at::Tensor heads = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
  const at::Tensor y = x + at::linear(heads.transpose(1, 2).reshape({2, 9, 64}),
                                      params["attn.proj.weight"], params["attn.proj.bias"]);
  const at::Tensor hidden =
      at::gelu(at::linear(norm(y, "norm2"), params["mlp.fc1.weight"], params["mlp.fc1.bias"]));
  const at::Tensor expected =
      y + at::linear(hidden, params["mlp.fc2.weight"], params["mlp.fc2.bias"]);
  EXPECT_TRUE(at::allclose(block->forward(x), expected, 1e-5, 1e-5));
}

// SetApproximateGelu reaches every Mlp of a model; on the CPU it changes nothing.
TEST(ApproximateGeluTest, ReachesEveryMlpAndLeavesTheCpuExact) {
  c10::InferenceMode inference_mode;
  torch::nn::Sequential blocks(vit_layers::Block(64, 2, 256), vit_layers::Block(64, 2, 256));
  vit_layers::Mlp lone(64, 256, 64);
  EXPECT_EQ(vit_layers::SetApproximateGelu(*blocks, true), 2);
  EXPECT_EQ(vit_layers::SetApproximateGelu(*lone, true), 1);
  const at::Tensor x = at::randn({2, 9, 64});
  EXPECT_FALSE(lone->GeluInProduct(x));
  const at::Tensor approximated = lone->forward(x);
  vit_layers::SetApproximateGelu(*lone, false);
  EXPECT_TRUE(at::equal(approximated, lone->forward(x)));
}

bool CudaAvailable() { return torch::cuda::is_available(); }

// The operands on the CPU in fp64 (an undefined bias stays undefined).
Operands Fp64(const Operands& o) {
  const auto f64 = [](const at::Tensor& t) {
    return t.defined() ? t.to(at::kCPU).to(at::kDouble) : t;
  };
  return {f64(o.input), f64(o.weight), f64(o.bias), f64(o.residual)};
}

// The largest difference between `output` and `reference` (fp64 on the CPU).
double MaxError(const at::Tensor& output, const at::Tensor& reference) {
  return (output.to(at::kCPU).to(at::kDouble) - reference).abs().max().item<double>();
}

// The largest error of `output` against residual + x Wᵀ + b computed in fp64 from the same
// (rounded) inputs.
double MaxError(const at::Tensor& output, const Operands& o) {
  return MaxError(output, ATensAnswer(Fp64(o)));
}

// The largest error of `output` against GELU_tanh(x Wᵀ + b) computed in fp64.
double MaxGeluError(const at::Tensor& output, const Operands& o) {
  const Operands d = Fp64(o);
  return MaxError(output, at::gelu(at::linear(d.input, d.weight, d.bias), "tanh"));
}

Operands ToDevice(const Operands& o, at::Device device, at::ScalarType dtype) {
  const auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device, dtype) : t; };
  return {move(o.input), move(o.weight), move(o.bias), move(o.residual)};
}

// Calls check(operands, what) for fp16 and bf16, each (in, out) of `widths`, row counts from one
// to several thousand, with and without a bias: the operands on the GPU, `what` naming the case.
template <typename Check>
void ForEachCudaCase(const std::vector<std::pair<int64_t, int64_t>>& widths, Check check) {
  const at::Device cuda(at::kCUDA, 0);
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    for (const auto& [in, out] : widths) {
      for (int64_t rows : {1, 7, 591, 5000}) {
        for (bool with_bias : {true, false}) {
          Operands host = MakeOperands({rows, in}, out, in + out + rows);
          if (!with_bias) host.bias = at::Tensor();
          const std::string what = c10::toString(dtype) + std::string(" in ") +
                                   std::to_string(in) + " out " + std::to_string(out) + " rows " +
                                   std::to_string(rows) + (with_bias ? "" : " without bias");
          check(ToDevice(host, cuda, dtype), what);
        }
      }
    }
  }
}

// The output's dtype and shape: the input's rows by the weight's.
void ExpectOutputLike(const at::Tensor& output, const Operands& o, const std::string& what) {
  EXPECT_EQ(output.scalar_type(), o.input.scalar_type()) << what;
  EXPECT_EQ(output.sizes(), (at::IntArrayRef{o.input.size(0), o.weight.size(0)})) << what;
}

// deit_tiny's and vit_base's widths (proj: D -> D, fc2: 4D -> D), against fp64: no worse than
// ATen's linear then add on the same inputs (which rounds the product before the addition), with
// a margin for the order of the fp32 sums. Runs only on a CUDA host.
TEST(LinearPlusResidualCudaTest, CublasLtIsAsExactAsATen) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode inference_mode;
  ForEachCudaCase({{192, 192}, {768, 192}, {768, 768}, {3072, 768}},
                  [](const Operands& o, const std::string& what) {
                    ASSERT_TRUE(LinearPlusResidualUsesCublasLt(o.input, o.weight, o.bias,
                                                               o.residual))
                        << what;
                    const at::Tensor ours =
                        LinearPlusResidual(o.input, o.weight, o.bias, o.residual);
                    ExpectOutputLike(ours, o, what);
                    const double aten_error = MaxError(ATensAnswer(o), o);
                    EXPECT_LE(MaxError(ours, o), 1.5 * aten_error + 1e-4)
                        << what << " (ATen's error " << aten_error << ")";
                  });
}

// The MLP's first product with its GELU in cuBLASLt's epilogue, deit_tiny's and vit_base's fc1
// (D -> 4D), against the tanh-approximated GELU in fp64: no worse than ATen's linear then
// GELU(tanh) on the same inputs, with the same margin. Runs only on a CUDA host.
TEST(LinearTanhGeluCudaTest, CublasLtIsAsExactAsATen) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode inference_mode;
  ForEachCudaCase({{192, 768}, {768, 3072}}, [](const Operands& o, const std::string& what) {
    ASSERT_TRUE(LinearTanhGeluUsesCublasLt(o.input, o.weight, o.bias)) << what;
    const at::Tensor ours = LinearTanhGelu(o.input, o.weight, o.bias);
    ExpectOutputLike(ours, o, what);
    const double aten_error =
        MaxGeluError(at::gelu(at::linear(o.input, o.weight, o.bias), "tanh"), o);
    EXPECT_LE(MaxGeluError(ours, o), 1.5 * aten_error + 1e-4)
        << what << " (ATen's error " << aten_error << ")";
  });
}

// An exact-GELU Mlp in fp16 on CUDA keeps erf GELU (a kernel after fc1) until
// set_approximate_gelu(true); then GELU runs in fc1's product in its tanh form, within fp16's
// rounding of the exact Mlp. A tanh-GELU Mlp takes the product either way. Runs only on CUDA.
TEST(ApproximateGeluCudaTest, OnlyAnApproximatedMlpTakesTheProduct) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode inference_mode;
  const at::Device cuda(at::kCUDA, 0);
  // Seeded before the weights too: their values must not depend on the tests run before.
  at::manual_seed(21);
  vit_layers::Mlp exact(192, 768, 192), tanh_form(192, 768, 192, /*tanh_gelu=*/true);
  for (auto* mlp : {&exact, &tanh_form}) {
    for (auto& parameter : (*mlp)->parameters()) parameter.normal_(0.0, 0.1);
    (*mlp)->to(cuda, at::kHalf);
  }
  const at::Tensor x = (at::randn({4, 197, 192}) * 3).to(cuda, at::kHalf);
  EXPECT_FALSE(exact->GeluInProduct(x));
  EXPECT_TRUE(tanh_form->GeluInProduct(x));
  const at::Tensor erf_output = exact->forward(x).to(at::kFloat);
  vit_layers::SetApproximateGelu(*exact, true);
  EXPECT_TRUE(exact->GeluInProduct(x));
  const at::Tensor tanh_output = exact->forward(x).to(at::kFloat);
  const double difference = (tanh_output - erf_output).abs().max().item<double>();
  EXPECT_GT(difference, 0.0) << "the approximated Mlp ran the same kernels";
  // fp16's spacing at the largest output (|outputs| reach about 40 here: 2^-5): fc1's outputs
  // are rounded to fp16 after GELU instead of before, so the two differ by a spacing or so
  // (an fp32 emulation over 20 seeds: 1 at most). The GELUs' own gap (at most 4.7e-4) is
  // far below it.
  const double largest = erf_output.abs().max().item<double>();
  const double spacing = std::ldexp(1.0, std::ilogb(largest) - 10);
  EXPECT_LE(difference, 2 * spacing) << "largest |output| " << largest;
}

// [B, N, D] tokens and a transposed (non-contiguous, copied first) input take cuBLASLt; a
// residual that is not contiguous or only broadcasts to the output, fp32 and training run
// ATen's; every one gives ATen's answer.
TEST(LinearPlusResidualCudaTest, TakesCublasLtOnlyWhereItApplies) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  const at::Device cuda(at::kCUDA, 0);
  const auto expect_close = [&](const Operands& o, bool cublas, const std::string& what) {
    c10::InferenceMode inference_mode;
    EXPECT_EQ(LinearPlusResidualUsesCublasLt(o.input, o.weight, o.bias, o.residual), cublas)
        << what;
    const at::Tensor ours = LinearPlusResidual(o.input, o.weight, o.bias, o.residual);
    const at::Tensor aten = ATensAnswer(o);
    ASSERT_EQ(ours.sizes(), aten.sizes()) << what;
    const double tolerance = o.input.scalar_type() == at::kFloat ? 1e-5 : 2e-2;
    EXPECT_LE((ours.to(at::kFloat) - aten.to(at::kFloat)).abs().max().item<double>(), tolerance)
        << what;
  };
  expect_close(ToDevice(MakeOperands({3, 197, 192}, 192, 2), cuda, at::kHalf), true, "tokens");
  Operands transposed = ToDevice(MakeOperands({3, 197, 192}, 192, 3), cuda, at::kHalf);
  transposed.input = at::randn({3, 192, 197}).to(cuda, at::kHalf).transpose(1, 2);
  expect_close(transposed, true, "transposed input");
  Operands strided = ToDevice(MakeOperands({3, 197, 192}, 192, 4), cuda, at::kHalf);
  strided.residual = at::randn({3, 192, 197}).to(cuda, at::kHalf).transpose(1, 2);
  expect_close(strided, false, "transposed residual");
  Operands broadcast = ToDevice(MakeOperands({3, 197, 192}, 192, 5), cuda, at::kHalf);
  broadcast.residual = at::randn({1, 197, 192}).to(cuda, at::kHalf);
  expect_close(broadcast, false, "broadcast residual");
  expect_close(ToDevice(MakeOperands({4, 192}, 192, 6), cuda, at::kFloat), false, "fp32");
  // Training: the weight wants gradients, so ATen's differentiable ops run.
  Operands training = ToDevice(MakeOperands({5, 192}, 192, 7), cuda, at::kHalf);
  training.weight.requires_grad_(true);
  EXPECT_FALSE(LinearPlusResidualUsesCublasLt(training.input, training.weight, training.bias,
                                              training.residual));
  LinearPlusResidual(training.input, training.weight, training.bias, training.residual)
      .to(at::kFloat)
      .sum()
      .backward();
  ASSERT_TRUE(training.weight.grad().defined());
  EXPECT_GT(training.weight.grad().abs().sum().item<float>(), 0.f);
}

#ifdef VITSERVE_WITH_CUDA
// A ViT block as the server runs it by default: fp16 on CUDA, captured in a CUDA graph after an
// eager pass on the capturing stream (as ModelInstance captures) and replayed. cuBLASLt's
// algorithm query and ATen's workspace are inside the capture; the replay must give the eager
// answer, and both the fp32 CPU block's within half precision. Runs only on a CUDA host.
TEST(LinearPlusResidualCudaTest, BlockInACudaGraphGivesTheEagerAnswer) {
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode inference_mode;
  const at::Device cuda(at::kCUDA, 0);
  at::manual_seed(9);  // Before the weights too: not whatever the tests before left.
  vit_layers::Block block(192, 3, 768);
  for (auto& parameter : block->parameters()) parameter.normal_(0.0, 0.05);
  const at::Tensor tokens = at::randn({4, 197, 192});
  const at::Tensor cpu_fp32 = block->forward(tokens);
  block->to(cuda, at::kHalf);
  auto params = block->named_parameters();
  const at::Tensor input = tokens.to(cuda, at::kHalf);
  ASSERT_TRUE(LinearPlusResidualUsesCublasLt(at::empty({4, 197, 768}, input.options()),
                                             params["mlp.fc2.weight"], params["mlp.fc2.bias"],
                                             input));

  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, 0);
  const c10::cuda::CUDAStreamGuard stream_guard(stream);
  const at::Tensor eager = block->forward(input).clone();
  stream.synchronize();
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  const at::Tensor captured = block->forward(input);
  graph.capture_end();
  graph.replay();
  stream.synchronize();
  const double replay_vs_eager =
      (captured.to(at::kFloat) - eager.to(at::kFloat)).abs().max().item<double>();
  EXPECT_LE(replay_vs_eager, 1e-3);
  const double eager_vs_cpu =
      (eager.to(at::kCPU, at::kFloat) - cpu_fp32).abs().max().item<double>();
  EXPECT_LE(eager_vs_cpu, 5e-2) << "largest |output| " << cpu_fp32.abs().max().item<double>();
}
#endif  // VITSERVE_WITH_CUDA

}  // namespace
}  // namespace vitserve::layers
