#include "models/vit/vision_transformer.h"

#include <c10/core/GradMode.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <utility>
#include <vector>

#include "models/layers/init.h"
#include "models/layers/vit_layers.h"
#include "models/layers/layer_norm.h"
#include "models/layers/linear.h"

namespace vitserve {
namespace {

namespace nn = torch::nn;
using vit_layers::Attention;
using vit_layers::Block;
using vit_layers::MakeLayerNorm;
using vit_layers::PatchEmbed;

class VisionTransformer final : public VisionModel {
 public:
  VisionTransformer(const VitConfig& config, const VitAttentionFactory& attention)
      : config_(config) {
    TORCH_CHECK(config.img_size % config.patch_size == 0, "image size ", config.img_size,
                " is not a multiple of the patch size ", config.patch_size);
    TORCH_CHECK(config.embed_dim % config.num_heads == 0, "embed_dim ", config.embed_dim,
                " is not divisible by ", config.num_heads, " heads");
    const int64_t dim = config.embed_dim;
    const int64_t grid = config.img_size / config.patch_size;
    const int64_t prefix = config.distilled ? 2 : 1;
    // Parameters are registered in timm's order; names are what matters for loading.
    cls_token_ = register_parameter("cls_token", at::zeros({1, 1, dim}));
    pos_embed_ = register_parameter("pos_embed", at::zeros({1, grid * grid + prefix, dim}));
    if (config.distilled) dist_token_ = register_parameter("dist_token", at::zeros({1, 1, dim}));
    patch_embed_ = register_module("patch_embed", PatchEmbed(config.patch_size, dim));
    blocks_ = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < config.depth; ++i) {
      Block block = attention ? Block(dim, dim * config.mlp_ratio, Attention(attention(i)))
                              : Block(dim, config.num_heads, dim * config.mlp_ratio);
      blocks_->push_back(block);
      block_list_.push_back(block);
    }
    norm_ = register_module("norm", MakeLayerNorm(dim));
    if (config.classifier) {
      head_ = register_module("head", layers::Linear(dim, config.num_classes));
      if (config.distilled)
        head_dist_ = register_module("head_dist", layers::Linear(dim, config.num_classes));
    } else {
      TORCH_CHECK(dim % 4 == 0, "the feature pyramid needs embed_dim divisible by 4, got ", dim);
      auto upsample = [](int64_t in, int64_t out) {
        return nn::ConvTranspose2d(nn::ConvTranspose2dOptions(in, out, 2).stride(2));
      };
      // Index 1 (the GELU) has no parameters: names simfp_2.0 and simfp_2.2, as in ViTDet.
      simfp_2_ = register_module(
          "simfp_2", nn::Sequential(upsample(dim, dim / 2), nn::GELU(), upsample(dim / 2, dim / 4)));
      simfp_3_ = register_module("simfp_3", nn::Sequential(upsample(dim, dim / 2)));
      levels_ = {{dim / 4, 4}, {dim / 2, 8}, {dim, 16}, {dim, 32}};
    }
    InitWeights();
  }

  torch::Tensor forward(torch::Tensor images) override {
    CheckInput(images);
    TORCH_CHECK(config_.classifier, "this ViT was built without a classifier (Features only)");
    const at::Tensor x = Encode(images);
    at::Tensor logits = head_->forward(x.select(1, 0));
    if (config_.distilled) logits = (logits + head_dist_->forward(x.select(1, 1))) / 2;
    return logits;
  }

  std::vector<FeatureLevel> FeatureLevels() const override { return levels_; }

  std::vector<torch::Tensor> Features(const torch::Tensor& images) override {
    TORCH_CHECK(!config_.classifier,
                "this ViT was built with a classifier; build it with classifier = false for "
                "feature maps");
    CheckInput(images);
    const int64_t grid = config_.img_size / config_.patch_size;
    const int64_t prefix = config_.distilled ? 2 : 1;
    // The patch tokens, row-major as the patch convolution flattened them, back into a map.
    const at::Tensor tokens = Encode(images).narrow(1, prefix, grid * grid);
    const at::Tensor map =
        tokens.transpose(1, 2).reshape({images.size(0), config_.embed_dim, grid, grid});
    return {simfp_2_->forward(map), simfp_3_->forward(map), map,
            at::max_pool2d(map, {2, 2}, {2, 2}, {0, 0}, {1, 1}, /*ceil_mode=*/true)};
  }

 private:
  void CheckInput(const torch::Tensor& images) const {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == config_.img_size &&
                    images.size(3) == config_.img_size,
                "ViT expects images [N,3,", config_.img_size, ",", config_.img_size, "], got ",
                images.sizes());
  }

  // Eq. 1-4 up to the final norm: [N, prefix + grid^2, D].
  at::Tensor Encode(const torch::Tensor& images) {
    at::Tensor x = patch_embed_->forward(images);
    const int64_t batch = x.size(0);
    std::vector<at::Tensor> parts{cls_token_.expand({batch, -1, -1})};
    if (config_.distilled) parts.push_back(dist_token_.expand({batch, -1, -1}));
    parts.push_back(x);
    x = at::cat(parts, 1) + pos_embed_;
    for (Block& block : block_list_) x = block->forward(x);
    return norm_->forward(x);
  }

  // timm's VisionTransformer.init_weights('') and init_weights_vit_timm; the patch conv keeps
  // PyTorch's default init, as in timm.
  void InitWeights() {
    c10::NoGradGuard no_grad;
    layers::TruncNormal_(pos_embed_, 0.02);
    cls_token_.normal_(0.0, 1e-6);
    if (config_.distilled) layers::TruncNormal_(dist_token_, 0.02);
    vit_layers::InitLinearsTimm(*this);
  }

  VitConfig config_;
  at::Tensor cls_token_, pos_embed_, dist_token_;
  PatchEmbed patch_embed_{nullptr};
  nn::ModuleList blocks_{nullptr};
  std::vector<Block> block_list_;  // The same modules as blocks_, typed for the forward loop.
  layers::LayerNorm norm_{nullptr};
  layers::Linear head_{nullptr};
  layers::Linear head_dist_{nullptr};
  nn::Sequential simfp_2_{nullptr}, simfp_3_{nullptr};  // Only without a classifier.
  std::vector<FeatureLevel> levels_;                     // Likewise.
};

}  // namespace

std::shared_ptr<VisionModel> MakeVisionTransformer(const VitConfig& config,
                                                   VitAttentionFactory attention) {
  return std::make_shared<VisionTransformer>(config, attention);
}

}  // namespace vitserve
