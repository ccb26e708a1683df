#include "models/tokenlearner/token_learner.h"

#include <c10/core/GradMode.h>
#include <torch/nn/modules/container/modulelist.h>

#include <string>
#include <vector>

#include "models/layers/init.h"
#include "models/layers/linear.h"

namespace vitserve {

namespace nn = torch::nn;
using vit_layers::MakeLayerNorm;

TokenLearnerV11Impl::TokenLearnerV11Impl(int64_t dim, int64_t num_tokens, int64_t bottleneck,
                                         bool tanh_gelu, double eps)
    : norm_(register_module("norm", MakeLayerNorm(dim, eps))),
      mlp_(register_module("mlp", vit_layers::Mlp(dim, bottleneck, num_tokens, tanh_gelu))) {}

at::Tensor TokenLearnerV11Impl::SelectionWeights(const at::Tensor& x) {
  // [B,N,C] → [B,N,S] → softmax over the N positions → [B,S,N].
  return at::softmax(mlp_->forward(norm_->forward(x)).transpose(1, 2), -1);
}

at::Tensor TokenLearnerV11Impl::forward(const at::Tensor& x) {
  return at::matmul(SelectionWeights(x), x);  // Weighted sums of the un-normalised input.
}

TokenFuserImpl::TokenFuserImpl(int64_t dim, int64_t num_tokens, int64_t bottleneck, bool tanh_gelu)
    : mix_norm1_(register_module("mix_norm1", MakeLayerNorm(dim))),
      mix_(register_module("mix", layers::Linear(num_tokens, num_tokens))),
      mix_norm2_(register_module("mix_norm2", MakeLayerNorm(dim))),
      norm_(register_module("norm", MakeLayerNorm(dim))),
      mlp_(register_module("mlp", vit_layers::Mlp(dim, bottleneck, num_tokens, tanh_gelu))) {}

at::Tensor TokenFuserImpl::forward(const at::Tensor& tokens, const at::Tensor& original) {
  at::Tensor mixed = mix_norm1_->forward(tokens);                // [B,S,C]
  mixed = mix_->forward(mixed.transpose(1, 2)).transpose(1, 2);  // Linear over the S axis.
  mixed = mix_norm2_->forward(mixed);
  const at::Tensor gates = at::sigmoid(mlp_->forward(norm_->forward(original)));  // [B,N,S]
  return at::matmul(gates, mixed);                                                // [B,N,C]
}

namespace {

class TokenLearnerVit final : public VisionModel {
 public:
  explicit TokenLearnerVit(const TokenLearnerVitConfig& config) : config_(config) {
    TORCH_CHECK(config.img_size % config.patch_size == 0, "image size ", config.img_size,
                " is not a multiple of the patch size ", config.patch_size);
    TORCH_CHECK(config.embed_dim % config.num_heads == 0, "embed_dim ", config.embed_dim,
                " is not divisible by ", config.num_heads, " heads");
    TORCH_CHECK(config.tokenlearner_loc >= 0 && config.tokenlearner_loc < config.depth,
                "tokenlearner_loc ", config.tokenlearner_loc, " must be in [0, ", config.depth,
                ")");
    TORCH_CHECK(config.num_tokens > 0, "num_tokens must be positive");
    const int64_t dim = config.embed_dim;
    const int64_t grid = config.img_size / config.patch_size;
    patch_embed_ = register_module("patch_embed", vit_layers::PatchEmbed(config.patch_size, dim));
    pos_embed_ = register_parameter("pos_embed", at::zeros({1, grid * grid, dim}));
    auto blocks = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < config.depth; ++i) {
      vit_layers::Block block(dim, config.num_heads, dim * config.mlp_ratio, config.tanh_gelu);
      blocks->push_back(block);
      blocks_.push_back(block);
    }
    if (config.use_fuser) {
      auto learners = register_module("token_learners", nn::ModuleList());
      auto fusers = register_module("token_fusers", nn::ModuleList());
      for (int64_t i = config.tokenlearner_loc; i < config.depth; ++i) {
        TokenLearnerV11 learner(dim, config.num_tokens, config.bottleneck, config.tanh_gelu);
        TokenFuser fuser(dim, config.num_tokens, config.bottleneck, config.tanh_gelu);
        learners->push_back(learner);
        fusers->push_back(fuser);
        learners_.push_back(learner);
        fusers_.push_back(fuser);
      }
    } else {
      learners_.push_back(register_module(
          "token_learner",
          TokenLearnerV11(dim, config.num_tokens, config.bottleneck, config.tanh_gelu)));
    }
    norm_ = register_module("norm", MakeLayerNorm(dim));
    head_ = register_module("head", layers::Linear(dim, config.num_classes));
    c10::NoGradGuard no_grad;
    layers::TruncNormal_(pos_embed_, 0.02);  // Scenic: normal(0.02) "from BERT".
    vit_layers::InitLinearsTimm(*this);
  }

  torch::Tensor forward(torch::Tensor images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == config_.img_size &&
                    images.size(3) == config_.img_size,
                "TokenLearner ViT expects images [N,3,", config_.img_size, ",", config_.img_size,
                "], got ", images.sizes());
    at::Tensor x = patch_embed_->forward(images) + pos_embed_;
    for (int64_t i = 0; i < config_.depth; ++i) {
      if (i < config_.tokenlearner_loc) {
        x = blocks_[i]->forward(x);
      } else if (!config_.use_fuser) {  // EncoderMod: learn S tokens once, keep them.
        if (i == config_.tokenlearner_loc) x = learners_[0]->forward(x);
        x = blocks_[i]->forward(x);
      } else {  // EncoderModFuser: TL → block → fuse back to HW tokens, per block.
        const int64_t j = i - config_.tokenlearner_loc;
        const at::Tensor tokens = blocks_[i]->forward(learners_[j]->forward(x));
        x = fusers_[j]->forward(tokens, x) + x;
      }
    }
    return head_->forward(norm_->forward(x).mean(1));  // 'gap' classifier.
  }

 private:
  TokenLearnerVitConfig config_;
  vit_layers::PatchEmbed patch_embed_{nullptr};
  at::Tensor pos_embed_;
  std::vector<vit_layers::Block> blocks_;
  std::vector<TokenLearnerV11> learners_;
  std::vector<TokenFuser> fusers_;
  layers::LayerNorm norm_{nullptr};
  layers::Linear head_{nullptr};
};

}  // namespace

std::shared_ptr<VisionModel> MakeTokenLearnerVit(const TokenLearnerVitConfig& config) {
  return std::make_shared<TokenLearnerVit>(config);
}

}  // namespace vitserve
