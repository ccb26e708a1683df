#include "models/layers/norm_linear.h"

#include <c10/core/GradMode.h>

#include "models/layers/conv_norm.h"
#include "models/layers/init.h"
#include "models/layers/linear.h"

namespace vitserve::layers {

namespace nn = torch::nn;

NormLinearImpl::NormLinearImpl(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {
  bn_ = register_module("bn", nn::BatchNorm1d(in_features));
  l_ = register_module("l", layers::Linear(in_features, out_features));
  c10::NoGradGuard no_grad;
  TruncNormal_(l_->weight, 0.02);  // As timm's NormLinear initialises its classifier.
  l_->bias.zero_();
}

torch::Tensor NormLinearImpl::forward(const torch::Tensor& x) {
  if (!bn_) return l_->forward(x);
  return l_->forward(bn_->forward(x));
}

void NormLinearImpl::Fuse() {
  if (!bn_) return;
  c10::NoGradGuard no_grad;
  auto [scale, shift] = BatchNormScaleShift(bn_->weight, bn_->bias, bn_->running_mean,
                                            bn_->running_var, bn_->options.eps());
  const at::Tensor weight = l_->weight.to(at::kDouble);
  layers::Linear fused(in_features_, out_features_);
  fused->to(l_->weight.device(), l_->weight.scalar_type());
  fused->weight.copy_(weight * scale.view({1, -1}));
  fused->bias.copy_(at::matmul(weight, shift) + l_->bias.to(at::kDouble));
  fused->train(is_training());
  l_ = replace_module("l", fused);
  unregister_module("bn");
  bn_ = nullptr;
}

}  // namespace vitserve::layers
