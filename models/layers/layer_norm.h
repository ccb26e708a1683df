// layers::LayerNorm: torch::nn::LayerNorm (same parameters, names and options) whose forward
// runs a warp-per-row CUDA kernel (layer_norm_cuda.cu) where it applies, and ATen's
// at::layer_norm everywhere else.
//
// Why: ATen's CUDA layer norm spends a block of 128 threads on each row; a ViT's rows are 192 to
// 1,024 elements, and its layer norms took 32% of deit_tiny's fp16 forward pass on the H200 for
// a few microseconds of memory traffic each (see layer_norm_cuda.cu). The kernel reads each row
// once into one warp's registers.
//
// The kernel runs when the input is on a CUDA device, normalises only its last dimension, that
// dimension is a multiple of 64 up to 1,024, weight and bias exist with the input's dtype
// (fp32, fp16, bf16), and no gradient is wanted (it has no backward; training keeps ATen's).
// Its results equal at::layer_norm's to the rounding of the output dtype (statistics in fp32).
//
// Ownership/thread-safety: an ordinary torch::nn module (see vision_model.h). Errors: c10::Error
// from torch on bad shapes, or if the kernel cannot be launched.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace vitserve::layers {

// at::layer_norm(input, {input.size(-1)}, weight, bias, eps), through the kernel when it applies
// (above).
at::Tensor LayerNormLastDim(const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& bias, double eps);

// Whether LayerNormLastDim runs the CUDA kernel for these arguments: false in builds without
// CUDA. For tests and benchmarks that must know which path they measured.
bool LayerNormUsesKernel(const at::Tensor& input, const at::Tensor& weight,
                         const at::Tensor& bias);

// Whether this build has the kernel (built with CUDA).
bool LayerNormKernelBuilt();

class LayerNormImpl : public torch::nn::LayerNormImpl {
 public:
  using torch::nn::LayerNormImpl::LayerNormImpl;
  at::Tensor forward(const at::Tensor& input);
};
TORCH_MODULE(LayerNorm);

}  // namespace vitserve::layers
