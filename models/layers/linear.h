// layers::Linear: torch::nn::Linear (same parameters, names and options) whose forward is ATen's
// at::linear, the function PyTorch's nn.Linear calls.
//
// Why: the LibTorch C++ frontend's own linear (torch::nn::functional::linear, which
// torch::nn::Linear::forward calls) fuses the bias only for 2-D inputs. For the [B, N, D]
// token tensors of every transformer here it multiplies, then adds the bias in a separate,
// broadcasting elementwise kernel over the whole output. at::linear folds a contiguous N-D input
// into one matrix product with the bias in cuBLAS's epilogue, as timm in PyTorch runs. Measured
// on the H200 (2026-12-03, fp16, batch 256, bench/model_vs_timm.sh PROFILE_KERNELS=10): those
// separate bias additions were 37% of deit_tiny's GPU time and 34% of vit_base's, and the whole
// of their gap to timm.
//
// Ownership/thread-safety: an ordinary torch::nn module (see vision_model.h). Errors: c10::Error
// from torch on bad shapes.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace vitserve::layers {

class LinearImpl : public torch::nn::LinearImpl {
 public:
  using torch::nn::LinearImpl::LinearImpl;
  at::Tensor forward(const at::Tensor& input) { return at::linear(input, weight, bias); }
};
TORCH_MODULE(Linear);

}  // namespace vitserve::layers
