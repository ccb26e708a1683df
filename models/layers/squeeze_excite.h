// Squeeze-and-excitation (Hu et al., arXiv 1709.01507, Sec. 3) as in timm's `SEModule`:
// global average pool → 1×1 conv `fc1` → ReLU → 1×1 conv `fc2` → sigmoid gate on the input.
// The reduced width is timm's make_divisible(channels · rd_ratio, 8).
// Ownership/thread-safety as for any torch module; no folding applies. Errors: none.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace vitserve::layers {

// timm's make_divisible(v, divisor, round_limit): nearest multiple of `divisor`, at least
// `divisor`, bumped up once if rounding lost more than (1 − round_limit) of v.
int64_t MakeDivisible(double value, int64_t divisor, double round_limit);

class SqueezeExciteImpl : public torch::nn::Module {
 public:
  SqueezeExciteImpl(int64_t channels, double rd_ratio);
  torch::Tensor forward(const torch::Tensor& x);
  int64_t reduced_channels() const { return reduced_; }

 private:
  int64_t reduced_;
  torch::nn::Conv2d fc1_{nullptr};
  torch::nn::Conv2d fc2_{nullptr};
};
TORCH_MODULE(SqueezeExcite);

}  // namespace vitserve::layers
