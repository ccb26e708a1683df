// Conv2d (no bias) followed by BatchNorm2d, and its inference-time folding into one Conv2d.
//
// Used by SHViT (timm's `Conv2dNorm`; child names `c` and `bn`, so state-dict keys match).
// Fuse() implements the standard BN folding: with s = γ / sqrt(σ² + ε),
//   W' = W · s (per output channel),  b' = β − μ · s,
// after which the module holds a biased conv named `c` and no `bn`.
// Ownership: a torch::nn module held by its TORCH_MODULE holder (shared_ptr semantics).
// Thread-safety: forward() is safe to call concurrently in eval mode; Fuse()/AddIdentity() are
// not and must run before serving. Errors: TORCH_CHECK (c10::Error) on misuse of AddIdentity().
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace vitserve::layers {

struct Conv2dNormOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel_size = 1;
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t groups = 1;
  // Initial BN γ. SHViT starts the last BN of each residual branch at 0 so every block begins
  // as the identity.
  double bn_weight_init = 1.0;
};

class Conv2dNormImpl : public torch::nn::Module {
 public:
  explicit Conv2dNormImpl(const Conv2dNormOptions& options);

  torch::Tensor forward(const torch::Tensor& x);

  // Folds `bn` into `c`. Idempotent.
  void Fuse();
  // For a fused, depthwise, stride-1, "same"-padded conv: adds 1 at each kernel centre so that
  // conv'(x) == x + conv(x), which removes the residual add of a Residual(depthwise conv).
  void AddIdentity();
  bool fused() const { return !bn_; }
  // Whether forward(x) runs the fused 1×1, stride-1 convolution as one matrix product over the
  // pixels (at::linear, the bias in the GEMM's epilogue): for CUDA tensors in channels-last
  // memory. cuDNN's convolution adds the bias with a separate broadcasting kernel, which is not
  // vectorised on channels-last tensors: 40% of shvit_s1's GPU time at 1024 px
  // (docs/performance.md, run H). Same output, channels-last, as the convolution.
  bool UsesPixelMatmul(const at::Tensor& x) const;

 private:
  Conv2dNormOptions options_;
  torch::nn::Conv2d c_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
};
TORCH_MODULE(Conv2dNorm);

// Folds a BatchNorm's eval-mode affine map y = s·x + t into a per-channel (scale, shift) pair:
// s = γ / sqrt(σ² + ε), t = β − μ·s. Shared by the conv and linear folding.
std::pair<at::Tensor, at::Tensor> BatchNormScaleShift(const at::Tensor& weight,
                                                      const at::Tensor& bias,
                                                      const at::Tensor& running_mean,
                                                      const at::Tensor& running_var, double eps);

}  // namespace vitserve::layers
