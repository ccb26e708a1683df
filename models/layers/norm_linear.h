// BatchNorm1d followed by Linear (timm's `NormLinear`, SHViT's classifier head; child names
// `bn` and `l`), and its inference-time folding into one Linear:
//   y = W (s·x + t) + b  =  (W·diag(s)) x + (W t + b),  s = γ/sqrt(σ²+ε), t = β − μ·s.
// Ownership/thread-safety as for Conv2dNorm (conv_norm.h). Errors: none beyond torch's.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "models/layers/linear.h"

namespace vitserve::layers {

class NormLinearImpl : public torch::nn::Module {
 public:
  NormLinearImpl(int64_t in_features, int64_t out_features);

  torch::Tensor forward(const torch::Tensor& x);
  // Folds `bn` into `l`. Idempotent.
  void Fuse();
  bool fused() const { return !bn_; }
  layers::Linear& linear() { return l_; }

 private:
  int64_t in_features_;
  int64_t out_features_;
  torch::nn::BatchNorm1d bn_{nullptr};
  layers::Linear l_{nullptr};
};
TORCH_MODULE(NormLinear);

}  // namespace vitserve::layers
