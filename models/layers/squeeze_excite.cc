#include "models/layers/squeeze_excite.h"

#include <algorithm>

namespace vitserve::layers {

namespace nn = torch::nn;

int64_t MakeDivisible(double value, int64_t divisor, double round_limit) {
  int64_t rounded =
      std::max<int64_t>(divisor, static_cast<int64_t>(value + divisor / 2.0) / divisor * divisor);
  if (rounded < round_limit * value) rounded += divisor;
  return rounded;
}

SqueezeExciteImpl::SqueezeExciteImpl(int64_t channels, double rd_ratio)
    // timm's SEModule passes round_limit=0, i.e. never bumps up.
    : reduced_(MakeDivisible(channels * rd_ratio, 8, 0.0)) {
  fc1_ = register_module("fc1", nn::Conv2d(nn::Conv2dOptions(channels, reduced_, 1).bias(true)));
  fc2_ = register_module("fc2", nn::Conv2d(nn::Conv2dOptions(reduced_, channels, 1).bias(true)));
}

torch::Tensor SqueezeExciteImpl::forward(const torch::Tensor& x) {
  at::Tensor s = x.mean({2, 3}, /*keepdim=*/true);
  s = fc2_->forward(at::relu(fc1_->forward(s)));
  return x * at::sigmoid(s);
}

}  // namespace vitserve::layers
