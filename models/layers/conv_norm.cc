#include "models/layers/conv_norm.h"

#include <c10/core/GradMode.h>

namespace vitserve::layers {

namespace nn = torch::nn;

std::pair<at::Tensor, at::Tensor> BatchNormScaleShift(const at::Tensor& weight,
                                                      const at::Tensor& bias,
                                                      const at::Tensor& running_mean,
                                                      const at::Tensor& running_var, double eps) {
  // Computed in fp64 and cast back, so folding adds no rounding beyond the final cast.
  const at::Tensor scale = weight.to(at::kDouble) / (running_var.to(at::kDouble) + eps).sqrt();
  const at::Tensor shift = bias.to(at::kDouble) - running_mean.to(at::kDouble) * scale;
  return {scale, shift};
}

Conv2dNormImpl::Conv2dNormImpl(const Conv2dNormOptions& options) : options_(options) {
  c_ = register_module("c", nn::Conv2d(nn::Conv2dOptions(options.in_channels, options.out_channels,
                                                         options.kernel_size)
                                           .stride(options.stride)
                                           .padding(options.padding)
                                           .groups(options.groups)
                                           .bias(false)));
  bn_ = register_module("bn", nn::BatchNorm2d(options.out_channels));
  c10::NoGradGuard no_grad;
  bn_->weight.fill_(options.bn_weight_init);
  bn_->bias.zero_();
}

bool Conv2dNormImpl::UsesPixelMatmul(const at::Tensor& x) const {
  return !bn_ && x.is_cuda() && x.dim() == 4 && options_.kernel_size == 1 &&
         options_.stride == 1 && options_.padding == 0 && options_.groups == 1 &&
         x.size(1) == options_.in_channels && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

torch::Tensor Conv2dNormImpl::forward(const torch::Tensor& x) {
  if (bn_) return bn_->forward(c_->forward(x));
  if (!UsesPixelMatmul(x)) return c_->forward(x);
  // The pixels of channels-last memory are the rows of an [N·H·W, C_in] matrix; the result's
  // rows are the pixels of a channels-last [N, C_out, H, W] tensor.
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  const at::Tensor pixels = x.permute({0, 2, 3, 1}).reshape({n * h * w, options_.in_channels});
  const at::Tensor weight = c_->weight.reshape({options_.out_channels, options_.in_channels});
  return at::linear(pixels, weight, c_->bias)
      .view({n, h, w, options_.out_channels})
      .permute({0, 3, 1, 2});
}

void Conv2dNormImpl::Fuse() {
  if (!bn_) return;
  c10::NoGradGuard no_grad;
  const at::Tensor weight = c_->weight;
  auto [scale, shift] = BatchNormScaleShift(bn_->weight, bn_->bias, bn_->running_mean,
                                            bn_->running_var, bn_->options.eps());
  nn::Conv2d fused(
      nn::Conv2dOptions(options_.in_channels, options_.out_channels, options_.kernel_size)
          .stride(options_.stride)
          .padding(options_.padding)
          .groups(options_.groups)
          .bias(true));
  fused->to(weight.device(), weight.scalar_type());
  fused->weight.copy_(weight.to(at::kDouble) * scale.view({-1, 1, 1, 1}));
  fused->bias.copy_(shift);
  fused->train(is_training());
  c_ = replace_module("c", fused);
  unregister_module("bn");
  bn_ = nullptr;
}

void Conv2dNormImpl::AddIdentity() {
  TORCH_CHECK(fused(), "AddIdentity() needs a fused Conv2dNorm");
  TORCH_CHECK(options_.groups == options_.in_channels &&
                  options_.in_channels == options_.out_channels && options_.stride == 1 &&
                  options_.kernel_size % 2 == 1 && options_.padding == options_.kernel_size / 2,
              "AddIdentity() needs a depthwise, stride-1, same-padded conv with an odd kernel");
  c10::NoGradGuard no_grad;
  const int64_t centre = options_.kernel_size / 2;
  // Depthwise weight is [C, 1, k, k]: channel i's only input is channel i.
  c_->weight.select(2, centre).select(2, centre).add_(1.0);
}

}  // namespace vitserve::layers
