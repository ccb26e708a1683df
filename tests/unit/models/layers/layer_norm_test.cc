#include "models/layers/layer_norm.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdint>
#include <string>

#include "models/weights/state_dict.h"

namespace vitserve::layers {
namespace {

// Rows with a large common offset, so that a wrong mean or a one-pass variance would show.
at::Tensor Rows(at::IntArrayRef sizes, uint64_t seed) {
  at::manual_seed(seed);
  return at::randn(sizes) * 3 + 2;
}

TEST(LayerNormTest, KeepsTorchsNamesAndOptions) {
  LayerNorm norm(torch::nn::LayerNormOptions({192}).eps(1e-6));
  const std::map<std::string, at::Tensor> state = StateDictTensors(*norm);
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state.at("weight").sizes(), (at::IntArrayRef{192}));
  EXPECT_EQ(state.at("bias").sizes(), (at::IntArrayRef{192}));
  EXPECT_DOUBLE_EQ(norm->options.eps(), 1e-6);
}

// On the CPU the module is ATen's layer norm, over one or several trailing dimensions.
TEST(LayerNormTest, OnTheCpuEqualsATen) {
  c10::InferenceMode inference_mode;
  LayerNorm norm(torch::nn::LayerNormOptions({64}).eps(1e-5));
  norm->weight.normal_();
  norm->bias.normal_();
  const at::Tensor x = Rows({2, 5, 64}, 1);
  EXPECT_FALSE(LayerNormUsesKernel(x, norm->weight, norm->bias));
  EXPECT_TRUE(at::equal(norm->forward(x), at::layer_norm(x, {64}, norm->weight, norm->bias, 1e-5)));

  LayerNorm two_dims(torch::nn::LayerNormOptions({5, 64}));
  EXPECT_TRUE(at::equal(two_dims->forward(x),
                        at::layer_norm(x, {5, 64}, two_dims->weight, two_dims->bias, 1e-5)));
}

bool CudaKernelAvailable() { return LayerNormKernelBuilt() && torch::cuda::is_available(); }

// The largest error of `output` against the layer norm computed in fp64 from the same inputs.
double MaxError(const at::Tensor& output, const at::Tensor& x, const at::Tensor& weight,
                const at::Tensor& bias, double eps) {
  const auto f64 = [](const at::Tensor& t) { return t.to(at::kCPU).to(at::kDouble); };
  const at::Tensor reference =
      at::layer_norm(f64(x), {x.size(-1)}, f64(weight), f64(bias), eps);
  return (f64(output) - reference).abs().max().item<double>();
}

// Every width the kernel takes, in each dtype, against fp64: no worse than ATen's own CUDA layer
// norm on the same inputs (both round a fp32 result to the output dtype), with a margin of 1.5x
// for the order of the fp32 sums. Row counts that are and are not multiples of the block's four
// rows. Runs only on a CUDA host with the kernel built.
TEST(LayerNormCudaTest, KernelIsAsExactAsATenForEveryWidthAndDtype) {
  if (!CudaKernelAvailable()) GTEST_SKIP() << "no CUDA device or a build without CUDA";
  c10::InferenceMode inference_mode;
  const at::Device cuda(at::kCUDA, 0);
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (int64_t dim : {64, 192, 384, 576, 768, 1024}) {
      for (int64_t rows : {1, 7, 394}) {
        const at::Tensor x = Rows({rows, dim}, dim + rows).to(cuda, dtype);
        const at::Tensor weight = (at::randn({dim}) * 0.5 + 1).to(cuda, dtype);
        const at::Tensor bias = at::randn({dim}).to(cuda, dtype);
        ASSERT_TRUE(LayerNormUsesKernel(x, weight, bias));
        const at::Tensor ours = LayerNormLastDim(x, weight, bias, 1e-6);
        ASSERT_EQ(ours.scalar_type(), dtype);
        ASSERT_EQ(ours.sizes(), x.sizes());
        const at::Tensor aten = at::layer_norm(x, {dim}, weight, bias, 1e-6);
        const double our_error = MaxError(ours, x, weight, bias, 1e-6);
        const double aten_error = MaxError(aten, x, weight, bias, 1e-6);
        EXPECT_LE(our_error, 1.5 * aten_error + 1e-5)
            << c10::toString(dtype) << " dim " << dim << " rows " << rows << " (ATen's error "
            << aten_error << ")";
      }
    }
  }
}

// The module on [B, N, D] tokens, a non-contiguous input (copied first) and a contiguous view
// that starts between two element pairs (ATen's path) all give ATen's answer; a width the kernel
// does not take (200) and training (gradients wanted) run ATen's.
TEST(LayerNormCudaTest, ModuleTakesTheKernelOnlyWhereItApplies) {
  if (!CudaKernelAvailable()) GTEST_SKIP() << "no CUDA device or a build without CUDA";
  const at::Device cuda(at::kCUDA, 0);
  at::manual_seed(3);  // The weights must not depend on the tests run before this one.
  LayerNorm norm(torch::nn::LayerNormOptions({192}).eps(1e-6));
  {
    c10::NoGradGuard no_grad;
    norm->weight.normal_();
    norm->bias.normal_();
  }
  norm->to(cuda);
  const auto expect_close = [&](const at::Tensor& x, const std::string& what) {
    c10::InferenceMode inference_mode;
    const at::Tensor ours = norm->forward(x);
    const at::Tensor aten = at::layer_norm(x, {192}, norm->weight, norm->bias, 1e-6);
    EXPECT_LE((ours - aten).abs().max().item<float>(), 1e-5f) << what;
  };
  {
    c10::InferenceMode inference_mode;
    const at::Tensor tokens = Rows({3, 197, 192}, 3).to(cuda);
    EXPECT_TRUE(LayerNormUsesKernel(tokens, norm->weight, norm->bias));
    expect_close(tokens, "tokens");
    const at::Tensor transposed = Rows({3, 192, 197}, 4).to(cuda).transpose(1, 2);
    EXPECT_TRUE(LayerNormUsesKernel(transposed, norm->weight, norm->bias));
    expect_close(transposed, "transposed");
    const at::Tensor shifted = Rows({1 + 2 * 192}, 5).to(cuda).slice(0, 1).view({2, 192});
    EXPECT_FALSE(LayerNormUsesKernel(shifted, norm->weight, norm->bias));
    expect_close(shifted, "shifted view");
    const at::Tensor narrow = Rows({4, 200}, 6).to(cuda);
    EXPECT_FALSE(LayerNormUsesKernel(narrow, at::ones({200}, narrow.options()),
                                     at::zeros({200}, narrow.options())));
  }
  // Training: the parameters want gradients, so ATen's differentiable layer norm runs.
  const at::Tensor x = Rows({5, 192}, 7).to(cuda);
  EXPECT_FALSE(LayerNormUsesKernel(x, norm->weight, norm->bias));
  norm->forward(x).sum().backward();
  ASSERT_TRUE(norm->weight.grad().defined());
  EXPECT_GT(norm->weight.grad().abs().sum().item<float>(), 0.f);
}

}  // namespace
}  // namespace vitserve::layers
