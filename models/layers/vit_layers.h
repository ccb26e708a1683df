// timm-layout ViT building blocks (patch embedding, attention, MLP, pre-norm block) shared by
// ViT/DeiT (models/vit/) and the TokenLearner, ViTTM and Fibottention models. Same child names as
// timm's `vision_transformer.py`, so checkpoints load by name:
//   PatchEmbed: proj;  Attention: qkv, proj;  Mlp: fc1, fc2;  Block: norm1, attn, norm2, mlp.
// Ownership/thread-safety: ordinary torch::nn modules (see vision_model.h). Errors: c10::Error
// from torch on bad shapes.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <utility>

#include "models/layers/init.h"
#include "models/layers/layer_norm.h"
#include "models/layers/linear.h"
#include "models/layers/linear_residual.h"

namespace vitserve::vit_layers {

inline constexpr double kLayerNormEps = 1e-6;  // timm ViT / Flax default.

inline layers::LayerNorm MakeLayerNorm(int64_t dim, double eps = kLayerNormEps) {
  return layers::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

// Exact (erf) GELU as timm, or the tanh approximation that Flax's nn.gelu uses by default.
inline at::Tensor Gelu(const at::Tensor& x, bool tanh_approximation) {
  return at::gelu(x, tanh_approximation ? "tanh" : "none");
}

class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t patch, int64_t dim)
      : patch_(patch),
        proj_(register_module(
            "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, dim, patch).stride(patch)))) {}
  // [B,3,H,W] → [B, (H/P)(W/P), D], patches in row-major order (ViT Eq. 1).
  at::Tensor forward(const at::Tensor& x) {
    if (x.is_cuda() && x.dim() == 4 && x.size(2) % patch_ == 0 && x.size(3) % patch_ == 0) {
      return PatchesTimesWeight(x);
    }
    return proj_->forward(x).flatten(2).transpose(1, 2);
  }

 private:
  // The same convolution as one matrix product: each patch's pixels as a row, times the weight
  // flattened in the same order, with the bias in the product's epilogue. Why on CUDA: cuDNN
  // runs this stride-P, P×P convolution as an implicit GEMM that took 14% of deit_tiny's fp16
  // forward pass on the H200 (525 us at batch 256, as long as its 12 blocks' attention); the
  // rows are one copy of the image (gathered in the input's own memory order, so channels-last
  // input reads runs of P·C consecutive values) and the product a few microseconds.
  at::Tensor PatchesTimesWeight(const at::Tensor& x) {
    const int64_t batch = x.size(0), channels = x.size(1);
    const int64_t rows = x.size(2) / patch_, cols = x.size(3) / patch_;
    const at::Tensor& weight = proj_->weight;  // [D, C, P, P]
    const int64_t dim = weight.size(0);
    if (x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()) {
      // Entries of a patch in (row, column, channel) order, the weight permuted to match.
      const at::Tensor patches = x.permute({0, 2, 3, 1})
                                     .reshape({batch, rows, patch_, cols, patch_, channels})
                                     .permute({0, 1, 3, 2, 4, 5})
                                     .reshape({batch, rows * cols, patch_ * patch_ * channels});
      return at::linear(patches, weight.permute({0, 2, 3, 1}).reshape({dim, -1}), proj_->bias);
    }
    // Entries in (channel, row, column) order: the weight's own.
    const at::Tensor patches = x.reshape({batch, channels, rows, patch_, cols, patch_})
                                   .permute({0, 2, 4, 1, 3, 5})
                                   .reshape({batch, rows * cols, channels * patch_ * patch_});
    return at::linear(patches, weight.reshape({dim, -1}), proj_->bias);
  }

  int64_t patch_;
  torch::nn::Conv2d proj_;
};
TORCH_MODULE(PatchEmbed);

// timm's Attention: children qkv and proj, multi-head self-attention in between. Attend() is
// at::scaled_dot_product_attention (fused kernels on GPU); a model with another attention (e.g.
// Fibottention) subclasses this and overrides Attend(), keeping timm's names and projections.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t heads)
      : heads_(heads),
        qkv_(register_module("qkv", layers::Linear(dim, 3 * dim))),
        proj_(register_module("proj", layers::Linear(dim, dim))) {}
  ~AttentionImpl() override = default;

  // [B,N,D] → [3, B, heads, N, D/heads].
  at::Tensor Qkv(const at::Tensor& x) {
    const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
    return qkv_->forward(x)
        .reshape({batch, tokens, 3, heads_, dim / heads_})
        .permute({2, 0, 3, 1, 4});
  }
  // [B, heads, N, D/heads] → [B,N,D] through the output projection.
  at::Tensor Project(const at::Tensor& heads_out) {
    return proj_->forward(MergeHeads(heads_out));
  }
  // residual + Project(heads_out), the addition inside the projection's matrix product on CUDA
  // (layers::LinearPlusResidual).
  at::Tensor Project(const at::Tensor& heads_out, const at::Tensor& residual) {
    return layers::LinearPlusResidual(MergeHeads(heads_out), proj_->weight, proj_->bias, residual);
  }
  // softmax(q kᵀ / √d) v per head; q, k, v: [B, heads, N, D/heads].
  virtual at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    return at::scaled_dot_product_attention(q, k, v);
  }
  at::Tensor forward(const at::Tensor& x) { return Project(AttendAll(x)); }
  // residual + forward(x), as a pre-norm block adds it to its stream.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual) {
    return Project(AttendAll(x), residual);
  }
  int64_t heads() const { return heads_; }

 private:
  // [B,N,D] → [B, heads, N, D/heads]: the heads' outputs before the projection.
  at::Tensor AttendAll(const at::Tensor& x) {
    const at::Tensor qkv = Qkv(x);
    return Attend(qkv[0], qkv[1], qkv[2]);
  }
  static at::Tensor MergeHeads(const at::Tensor& heads_out) {
    const int64_t batch = heads_out.size(0), tokens = heads_out.size(2);
    return heads_out.transpose(1, 2).reshape({batch, tokens, -1});
  }

  int64_t heads_;
  layers::Linear qkv_;
  layers::Linear proj_;
};
TORCH_MODULE(Attention);

// fc1, GELU, fc2. On CUDA in fp16 or bf16 the GELU can run inside fc1's matrix product
// (cuBLASLt's epilogue, layers::LinearTanhGelu), which offers only GELU's tanh form. An Mlp whose
// model uses that form (tanh_gelu: TokenLearner's official Flax models) always takes it there. An
// exact-GELU Mlp (timm's ViTs) takes it there only after set_approximate_gelu(true), and then
// computes tanh GELU: at most 4.7e-4 from the exact value for any input, less than fp16's own
// rounding step for outputs above 0.5 (bf16's is 8x coarser). Why: as a separate kernel the GELU
// reads and writes the whole [B, N, 4D] hidden tensor, 19% of deit_tiny's fp16 forward pass on
// the H100 (docs/performance.md, run U).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t in, int64_t hidden, int64_t out, bool tanh_gelu = false)
      : tanh_gelu_(tanh_gelu),
        fc1_(register_module("fc1", layers::Linear(in, hidden))),
        fc2_(register_module("fc2", layers::Linear(hidden, out))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2_->forward(Hidden(x)); }
  // residual + forward(x), the addition inside fc2's matrix product on CUDA
  // (layers::LinearPlusResidual).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& residual) {
    return layers::LinearPlusResidual(Hidden(x), fc2_->weight, fc2_->bias, residual);
  }
  // Whether an exact-GELU Mlp may compute tanh GELU inside fc1's product (above); false (the
  // default) keeps erf GELU everywhere. No effect on a tanh-GELU Mlp.
  void set_approximate_gelu(bool approximate) { approximate_gelu_ = approximate; }
  // Whether forward(x) computes GELU inside fc1's product for input like x.
  bool GeluInProduct(const at::Tensor& x) const {
    return (tanh_gelu_ || approximate_gelu_) &&
           layers::LinearTanhGeluUsesCublasLt(x, fc1_->weight, fc1_->bias);
  }

 private:
  at::Tensor Hidden(const at::Tensor& x) {
    if (GeluInProduct(x)) return layers::LinearTanhGelu(x, fc1_->weight, fc1_->bias);
    return Gelu(fc1_->forward(x), tanh_gelu_);
  }

  bool tanh_gelu_;
  bool approximate_gelu_ = false;
  layers::Linear fc1_;
  layers::Linear fc2_;
};
TORCH_MODULE(Mlp);

// Pre-norm transformer block (ViT Eq. 2–3): x + attn(norm1(x)), then x + mlp(norm2(x)), each
// addition inside the branch's last matrix product on CUDA (layers::LinearPlusResidual).
// The attention is SDPA's unless the caller passes a subclass of AttentionImpl.
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t heads, int64_t mlp_hidden, bool tanh_gelu = false)
      : BlockImpl(dim, mlp_hidden, Attention(dim, heads), tanh_gelu) {}
  BlockImpl(int64_t dim, int64_t mlp_hidden, Attention attention, bool tanh_gelu = false)
      : norm1_(register_module("norm1", MakeLayerNorm(dim))),
        attn_(register_module("attn", std::move(attention))),
        norm2_(register_module("norm2", MakeLayerNorm(dim))),
        mlp_(register_module("mlp", Mlp(dim, mlp_hidden, dim, tanh_gelu))) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor y = attn_->forward(norm1_->forward(x), /*residual=*/x);
    return mlp_->forward(norm2_->forward(y), /*residual=*/y);
  }
  Attention& attn() { return attn_; }

 private:
  layers::LayerNorm norm1_;
  Attention attn_;
  layers::LayerNorm norm2_;
  Mlp mlp_;
};
TORCH_MODULE(Block);

// set_approximate_gelu(approximate) on every Mlp below and including `module`; returns how many
// there are (0 for a model without them, e.g. SHViT or Vision Mamba).
inline int SetApproximateGelu(torch::nn::Module& module, bool approximate) {
  int count = 0;
  const auto set = [&](torch::nn::Module& candidate) {
    if (auto* mlp = dynamic_cast<MlpImpl*>(&candidate)) {
      mlp->set_approximate_gelu(approximate);
      ++count;
    }
  };
  // modules(include_self=true) needs the module held by a shared_ptr; this one may not be.
  set(module);
  for (const auto& child : module.modules(/*include_self=*/false)) set(*child);
  return count;
}

// timm's init_weights_vit_timm for every Linear below `module`: trunc-normal(0.02) weight, zero
// bias. Patch convolutions and LayerNorms keep PyTorch's defaults, as in timm.
inline void InitLinearsTimm(torch::nn::Module& module) {
  c10::NoGradGuard no_grad;
  for (const auto& child : module.modules(/*include_self=*/false)) {
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(child.get())) {
      layers::TruncNormal_(linear->weight, 0.02);
      if (linear->bias.defined()) linear->bias.zero_();
    }
  }
}

}  // namespace vitserve::vit_layers
