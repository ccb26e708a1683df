#include "models/layers/conv_norm.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>

namespace vitserve::layers {
namespace {

// A fused Conv2dNorm with random weights and batch-norm statistics (so the folded bias is not
// zero).
Conv2dNorm FusedConvNorm(const Conv2dNormOptions& options) {
  at::manual_seed(11);
  Conv2dNorm conv(options);
  {
    c10::NoGradGuard no_grad;
    for (auto& p : conv->parameters()) p.normal_();
    for (auto& b : conv->buffers()) {
      if (b.is_floating_point()) b.uniform_(0.5, 1.5);
    }
  }
  conv->eval();
  conv->Fuse();
  return conv;
}

TEST(ConvNormTest, PixelMatmulIsOnlyForFusedPointwiseConvolutionsOfCudaTensors) {
  Conv2dNorm unfused(Conv2dNormOptions{8, 16, 1, 1, 0, 1});
  const at::Tensor cpu = at::randn({1, 8, 4, 4}).contiguous(at::MemoryFormat::ChannelsLast);
  EXPECT_FALSE(unfused->UsesPixelMatmul(cpu));
  EXPECT_FALSE(FusedConvNorm(Conv2dNormOptions{8, 16, 1, 1, 0, 1})->UsesPixelMatmul(cpu));
}

// On CUDA, the fused 1×1 convolution of a channels-last tensor runs as a matrix product and
// gives what the convolution gives in fp64 on the CPU (fp32 and fp16, error relative to the
// largest output), channels-last like it; NCHW input, strided 1×1 and 3×3 convolutions keep the
// convolution.
TEST(ConvNormCudaTest, PixelMatmulGivesTheConvolutionsOutput) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  c10::InferenceMode inference_mode;
  const at::Device cuda(at::kCUDA, 0);
  for (at::ScalarType dtype : {at::kFloat, at::kHalf}) {
    Conv2dNorm conv = FusedConvNorm(Conv2dNormOptions{32, 48, 1, 1, 0, 1});
    conv->to(cuda, dtype);
    at::manual_seed(12);
    const at::Tensor x = at::randn({2, 32, 7, 9}, at::TensorOptions(cuda).dtype(dtype))
                             .contiguous(at::MemoryFormat::ChannelsLast);
    ASSERT_TRUE(conv->UsesPixelMatmul(x));
    const at::Tensor ours = conv->forward(x);
    // The reference on the CPU in fp64: cuDNN's fp32 convolution runs in TF32 by default.
    const auto cpu64 = [](const at::Tensor& t) { return t.to(at::kCPU).to(at::kDouble); };
    const at::Tensor reference =
        at::conv2d(cpu64(x), cpu64(conv->named_parameters()["c.weight"]),
                   cpu64(conv->named_parameters()["c.bias"]));
    ASSERT_EQ(ours.sizes(), reference.sizes());
    EXPECT_EQ(ours.scalar_type(), dtype);
    EXPECT_TRUE(ours.is_contiguous(at::MemoryFormat::ChannelsLast));
    const double error =
        ((cpu64(ours) - reference).abs().max() / reference.abs().max()).item<double>();
    EXPECT_LE(error, dtype == at::kFloat ? 1e-5 : 2e-3) << c10::toString(dtype);
    EXPECT_FALSE(conv->UsesPixelMatmul(x.contiguous())) << "NCHW";
  }
  const at::Tensor x = at::randn({1, 8, 6, 6}, at::TensorOptions(cuda))
                           .contiguous(at::MemoryFormat::ChannelsLast);
  Conv2dNorm strided = FusedConvNorm(Conv2dNormOptions{8, 8, 1, 2, 0, 1});
  strided->to(cuda);
  EXPECT_FALSE(strided->UsesPixelMatmul(x));
  Conv2dNorm three = FusedConvNorm(Conv2dNormOptions{8, 8, 3, 1, 1, 1});
  three->to(cuda);
  EXPECT_FALSE(three->UsesPixelMatmul(x));
}

}  // namespace
}  // namespace vitserve::layers
