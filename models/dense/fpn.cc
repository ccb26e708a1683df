#include "models/dense/fpn.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>

namespace vitserve {
namespace {

namespace nn = torch::nn;

at::Tensor UpsampleTo(const at::Tensor& x, const at::Tensor& like) {
  if (x.size(2) == like.size(2) && x.size(3) == like.size(3)) return x;
  return at::upsample_bilinear2d(x, {like.size(2), like.size(3)}, /*align_corners=*/false);
}

}  // namespace

FpnDecoderImpl::FpnDecoderImpl(const std::vector<FeatureLevel>& levels, int64_t dim,
                               int64_t outputs) {
  lateral_ = register_module("lateral", nn::ModuleList());
  smooth_ = register_module("smooth", nn::ModuleList());
  for (const FeatureLevel& level : levels) {
    lateral_->push_back(nn::Conv2d(nn::Conv2dOptions(level.channels, dim, 1)));
    smooth_->push_back(
        nn::Sequential(nn::Conv2d(nn::Conv2dOptions(dim, dim, 3).padding(1).bias(false)),
                       nn::BatchNorm2d(dim), nn::ReLU()));
  }
  classifier_ = register_module("classifier", nn::Conv2d(nn::Conv2dOptions(dim, outputs, 1)));
}

at::Tensor FpnDecoderImpl::forward(const std::vector<at::Tensor>& features) {
  return Classify(Fuse(features));
}

at::Tensor FpnDecoderImpl::Classify(const at::Tensor& fused) { return classifier_->forward(fused); }

at::Tensor FpnDecoderImpl::Fuse(const std::vector<at::Tensor>& features) {
  const size_t n = lateral_->size();
  TORCH_CHECK(features.size() >= n, "FPN decoder: ", n, " levels expected, got ", features.size());
  std::vector<at::Tensor> merged(n);
  for (size_t i = n; i-- > 0;) {
    at::Tensor lateral = lateral_[i]->as<nn::Conv2d>()->forward(features[i]);
    merged[i] = i + 1 < n ? lateral + UpsampleTo(merged[i + 1], lateral) : lateral;
  }
  at::Tensor fused;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor level =
        UpsampleTo(smooth_[i]->as<nn::Sequential>()->forward(merged[i]), merged[0]);
    fused = fused.defined() ? fused + level : level;
  }
  return fused;
}

}  // namespace vitserve
