#include "models/shvit/shvit.h"

#include <c10/core/GradMode.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/normalization.h>

#include <cmath>
#include <utility>
#include <vector>

#include "models/layers/conv_norm.h"
#include "models/layers/norm_linear.h"
#include "models/layers/squeeze_excite.h"

namespace vitserve {
namespace {

namespace nn = torch::nn;
using layers::Conv2dNorm;
using layers::Conv2dNormOptions;

Conv2dNorm PointwiseConvNorm(int64_t in, int64_t out, double bn_weight_init = 1.0) {
  return Conv2dNorm(Conv2dNormOptions{in, out, 1, 1, 0, 1, bn_weight_init});
}

Conv2dNorm DepthwiseConvNorm(int64_t channels, int64_t stride, double bn_weight_init) {
  return Conv2dNorm(Conv2dNormOptions{channels, channels, 3, stride, 1, channels, bn_weight_init});
}

// Interface for the pieces FuseForInference() visits; found by walking the module tree.
class Fusable {
 public:
  virtual ~Fusable() = default;
  virtual void Fuse() = 0;
};

// Residual(Conv2dNorm depthwise): x + BN(dwconv(x)). Fused: one dwconv with the identity folded
// into its kernel centre, so the add disappears too.
class ResidualConvImpl : public nn::Module, public Fusable {
 public:
  explicit ResidualConvImpl(Conv2dNorm m) : m_(register_module("m", std::move(m))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return identity_folded_ ? m_->forward(x) : x + m_->forward(x);
  }
  void Fuse() override {
    if (identity_folded_) return;
    m_->Fuse();
    m_->AddIdentity();
    identity_folded_ = true;
  }

 private:
  Conv2dNorm m_;
  bool identity_folded_ = false;
};
TORCH_MODULE(ResidualConv);

// FFN of each block (Fig. 5): 1×1 Conv+BN to 2C, ReLU, 1×1 Conv+BN back to C.
class FfnImpl : public nn::Module {
 public:
  FfnImpl(int64_t dim, int64_t hidden)
      : pw1_(register_module("pw1", PointwiseConvNorm(dim, hidden))),
        pw2_(register_module("pw2", PointwiseConvNorm(hidden, dim, /*bn_weight_init=*/0.0))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return pw2_->forward(at::relu(pw1_->forward(x)));
  }

 private:
  Conv2dNorm pw1_;
  Conv2dNorm pw2_;
};
TORCH_MODULE(Ffn);

// Single-head self-attention (SHSA, Fig. 5) on the first `pdim` channels.
class ShsaImpl : public nn::Module {
 public:
  ShsaImpl(int64_t dim, int64_t qk_dim, int64_t pdim) : dim_(dim), qk_dim_(qk_dim), pdim_(pdim) {
    pre_norm_ = register_module("pre_norm", nn::GroupNorm(nn::GroupNormOptions(1, pdim)));
    qkv_ = register_module("qkv", PointwiseConvNorm(pdim, 2 * qk_dim + pdim));
    // timm: proj = Sequential(ReLU, Conv2dNorm), hence the state-dict key `proj.1`.
    proj_ = register_module(
        "proj", nn::Sequential(nn::ReLU(), PointwiseConvNorm(dim, dim, /*bn_weight_init=*/0.0)));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t batch = x.size(0), height = x.size(2), width = x.size(3);
    std::vector<at::Tensor> parts = x.split_with_sizes({pdim_, dim_ - pdim_}, 1);
    const at::Tensor qkv = qkv_->forward(pre_norm_->forward(parts[0]));
    std::vector<at::Tensor> qkv_parts = qkv.split_with_sizes({qk_dim_, qk_dim_, pdim_}, 1);
    // timm's order of operations, in the input's dtype: attn = softmax(qᵀk · qk_dim^-1/2) over
    // the HW tokens, out = v attnᵀ. Not at::scaled_dot_product_attention: v is wider than q and
    // k, which no fused SDPA kernel takes, and its fallback (the math backend) runs fp16 as fp32
    // GEMMs with a masked-row guard: at 1024 px, 1.1 ms more per batch of 32 than these half-
    // precision products on the H200 (docs/performance.md, run G).
    const at::Tensor q = qkv_parts[0].flatten(2);  // [B, qk, HW]
    const at::Tensor k = qkv_parts[1].flatten(2);
    const at::Tensor v = qkv_parts[2].flatten(2);  // [B, pdim, HW]
    const at::Tensor attn = at::softmax(
        at::matmul(q.transpose(1, 2), k) * (1.0 / std::sqrt(static_cast<double>(qk_dim_))), -1);
    const at::Tensor attended =
        at::matmul(v, attn.transpose(1, 2)).reshape({batch, pdim_, height, width});
    return proj_->forward(at::cat({attended, parts[1]}, 1));
  }

 private:
  int64_t dim_, qk_dim_, pdim_;
  nn::GroupNorm pre_norm_{nullptr};
  Conv2dNorm qkv_{nullptr};
  nn::Sequential proj_{nullptr};
};
TORCH_MODULE(Shsa);

// Residual(M) with the Python attribute name `m`.
template <typename Holder>
class ResidualImpl : public nn::Module {
 public:
  explicit ResidualImpl(Holder m) : m_(register_module("m", std::move(m))) {}
  torch::Tensor forward(const torch::Tensor& x) { return x + m_->forward(x); }

 private:
  Holder m_;
};
using ResidualFfnImpl = ResidualImpl<Ffn>;
using ResidualShsaImpl = ResidualImpl<Shsa>;
TORCH_MODULE(ResidualFfn);
TORCH_MODULE(ResidualShsa);

// SHViT block (Fig. 5): depthwise conv, optional SHSA, FFN, each residual.
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int64_t dim, int64_t qk_dim, int64_t pdim, bool attention) {
    conv_ = register_module("conv", ResidualConv(DepthwiseConvNorm(dim, 1, 0.0)));
    if (attention) mixer_ = register_module("mixer", ResidualShsa(Shsa(dim, qk_dim, pdim)));
    ffn_ = register_module("ffn", ResidualFfn(Ffn(dim, 2 * dim)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    at::Tensor y = conv_->forward(x);
    if (mixer_) y = mixer_->forward(y);
    return ffn_->forward(y);
  }

 private:
  ResidualConv conv_{nullptr};
  ResidualShsa mixer_{nullptr};
  ResidualFfn ffn_{nullptr};
};
TORCH_MODULE(BasicBlock);

// PatchMerging between stages: expand 4×, stride-2 depthwise, squeeze-excite, project.
class PatchMergingImpl : public nn::Module {
 public:
  PatchMergingImpl(int64_t dim, int64_t out_dim) {
    const int64_t hidden = 4 * dim;
    conv1_ = register_module("conv1", PointwiseConvNorm(dim, hidden));
    conv2_ = register_module("conv2", DepthwiseConvNorm(hidden, 2, 1.0));
    se_ = register_module("se", layers::SqueezeExcite(hidden, 0.25));
    conv3_ = register_module("conv3", PointwiseConvNorm(hidden, out_dim));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    at::Tensor y = at::relu(conv1_->forward(x));
    y = at::relu(conv2_->forward(y));
    return conv3_->forward(se_->forward(y));
  }

 private:
  Conv2dNorm conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  layers::SqueezeExcite se_{nullptr};
};
TORCH_MODULE(PatchMerging);

class StageImpl : public nn::Module {
 public:
  StageImpl(int64_t prev_dim, int64_t dim, int64_t qk_dim, int64_t pdim, bool attention,
            int64_t depth) {
    if (prev_dim != dim) {
      downsample_ = register_module(
          "downsample",
          nn::Sequential(ResidualConv(DepthwiseConvNorm(prev_dim, 1, 1.0)),
                         ResidualFfn(Ffn(prev_dim, 2 * prev_dim)), PatchMerging(prev_dim, dim),
                         ResidualConv(DepthwiseConvNorm(dim, 1, 1.0)),
                         ResidualFfn(Ffn(dim, 2 * dim))));
    }
    blocks_ = register_module("blocks", nn::Sequential());
    for (int64_t i = 0; i < depth; ++i)
      blocks_->push_back(BasicBlock(dim, qk_dim, pdim, attention));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return blocks_->forward(downsample_ ? downsample_->forward(x) : x);
  }

 private:
  nn::Sequential downsample_{nullptr};
  nn::Sequential blocks_{nullptr};
};
TORCH_MODULE(Stage);

class Shvit final : public VisionModel {
 public:
  explicit Shvit(const ShvitConfig& config) {
    TORCH_CHECK(config.embed_dim[0] % 8 == 0, "SHViT stem width must be a multiple of 8");
    const int64_t stem = config.embed_dim[0];
    // Indices 1, 3, 5 are the ReLUs, so the convs are patch_embed.{0,2,4,6} as in timm.
    patch_embed_ = register_module(
        "patch_embed",
        nn::Sequential(Conv2dNorm(Conv2dNormOptions{3, stem / 8, 3, 2, 1}), nn::ReLU(),
                       Conv2dNorm(Conv2dNormOptions{stem / 8, stem / 4, 3, 2, 1}), nn::ReLU(),
                       Conv2dNorm(Conv2dNormOptions{stem / 4, stem / 2, 3, 2, 1}), nn::ReLU(),
                       Conv2dNorm(Conv2dNormOptions{stem / 2, stem, 3, 2, 1})));
    stages_ = register_module("stages", nn::Sequential());
    int64_t prev = stem;
    for (size_t i = 0; i < 3; ++i) {
      stages_->push_back(Stage(prev, config.embed_dim[i], config.qk_dim, config.partial_dim[i],
                               config.attention[i], config.depth[i]));
      prev = config.embed_dim[i];
    }
    if (config.classifier) {
      head_ = register_module("head", layers::NormLinear(prev, config.num_classes));
    }
    levels_ = {{stem / 4, 4}, {stem / 2, 8}, {config.embed_dim[0], 16}, {config.embed_dim[1], 32},
               {config.embed_dim[2], 64}};
  }

  torch::Tensor forward(torch::Tensor images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "SHViT expects images [N,3,H,W], got ",
                images.sizes());
    TORCH_CHECK(!head_.is_empty(), "this SHViT was built without a classifier (Features only)");
    at::Tensor x = stages_->forward(patch_embed_->forward(images));
    return head_->forward(x.mean({2, 3}));
  }

  std::vector<FeatureLevel> FeatureLevels() const override { return levels_; }

  std::vector<torch::Tensor> Features(const torch::Tensor& images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3, "SHViT expects images [N,3,H,W], got ",
                images.sizes());
    std::vector<torch::Tensor> maps;
    at::Tensor x = images;
    size_t index = 0;
    for (nn::AnyModule& layer : *patch_embed_) {
      x = layer.forward(x);
      // After the ReLUs that follow the second and third convolutions: strides 4 and 8.
      if (index == 3 || index == 5) maps.push_back(x);
      ++index;
    }
    for (nn::AnyModule& stage : *stages_) {
      x = stage.forward(x);
      maps.push_back(x);
    }
    return maps;
  }

  void FuseForInference() override {
    c10::NoGradGuard no_grad;
    // Snapshot the tree first: fusing replaces children.
    for (const std::shared_ptr<nn::Module>& module : modules(/*include_self=*/false)) {
      if (auto* fusable = dynamic_cast<Fusable*>(module.get())) {
        fusable->Fuse();
      } else if (auto* conv = dynamic_cast<layers::Conv2dNormImpl*>(module.get())) {
        conv->Fuse();
      } else if (auto* head = dynamic_cast<layers::NormLinearImpl*>(module.get())) {
        head->Fuse();
      }
    }
  }

 private:
  nn::Sequential patch_embed_{nullptr};
  nn::Sequential stages_{nullptr};
  layers::NormLinear head_{nullptr};
  std::vector<FeatureLevel> levels_;
};

}  // namespace

std::shared_ptr<VisionModel> MakeShvit(const ShvitConfig& config) {
  return std::make_shared<Shvit>(config);
}

}  // namespace vitserve
