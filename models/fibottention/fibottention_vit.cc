#include "models/fibottention/fibottention_vit.h"

#include <c10/core/GradMode.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "models/layers/init.h"
#include "models/layers/vit_layers.h"

namespace vitserve {
namespace {

namespace nn = torch::nn;

// timm's Attention (children qkv, proj) with the attention itself replaced by Fibottention.
class FibAttentionImpl : public nn::Module {
 public:
  FibAttentionImpl(int64_t dim, int64_t heads, FibottentionPattern pattern,
                   FibottentionSemantics semantics)
      : heads_(heads),
        scale_(1.0 / std::sqrt(static_cast<double>(dim / heads))),
        semantics_(semantics),
        pattern_(std::move(pattern)),
        qkv_(register_module("qkv", nn::Linear(dim, 3 * dim))),
        proj_(register_module("proj", nn::Linear(dim, dim))) {}

  at::Tensor forward(const at::Tensor& x) {
    const int64_t batch = x.size(0), tokens = x.size(1), dim = x.size(2);
    const at::Tensor qkv =
        qkv_->forward(x).reshape({batch, tokens, 3, heads_, dim / heads_}).permute({2, 0, 3, 1, 4});
    const at::Tensor out =
        FibottentionAttention(qkv[0], qkv[1], qkv[2], PatternOn(x.device()), semantics_, scale_);
    return proj_->forward(out.transpose(1, 2).reshape({batch, tokens, dim}));
  }

  const FibottentionPattern& pattern() const { return pattern_; }

 private:
  const FibottentionPattern& PatternOn(const at::Device& device) {
    if (device.is_cpu()) return pattern_;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = on_device_.find(device.str());
    if (it == on_device_.end())
      it = on_device_.emplace(device.str(), PatternTo(pattern_, device)).first;
    return it->second;  // std::map nodes are stable; entries are never erased.
  }

  int64_t heads_;
  double scale_;
  FibottentionSemantics semantics_;
  FibottentionPattern pattern_;  // CPU.
  std::mutex mu_;
  std::map<std::string, FibottentionPattern> on_device_;  // Guarded by mu_.
  nn::Linear qkv_;
  nn::Linear proj_;
};
TORCH_MODULE(FibAttention);

class FibBlockImpl : public vit_layers::BlockTImpl<FibAttention> {
 public:
  FibBlockImpl(int64_t dim, int64_t mlp_hidden, FibAttention attention)
      : vit_layers::BlockTImpl<FibAttention>(dim, mlp_hidden, std::move(attention)) {}
};
TORCH_MODULE(FibBlock);

class FibottentionVit final : public VisionModel {
 public:
  explicit FibottentionVit(const FibottentionVitConfig& config) : config_(config) {
    TORCH_CHECK(config.img_size % config.patch_size == 0, "image size ", config.img_size,
                " is not a multiple of the patch size ", config.patch_size);
    TORCH_CHECK(config.embed_dim % config.num_heads == 0, "embed_dim ", config.embed_dim,
                " is not divisible by ", config.num_heads, " heads");
    const int64_t dim = config.embed_dim;
    const int64_t grid = config.img_size / config.patch_size;
    const int64_t patches = grid * grid;
    cls_token_ = register_parameter("cls_token", at::zeros({1, 1, dim}));
    pos_embed_ = register_parameter("pos_embed", at::zeros({1, patches + 1, dim}));
    patch_embed_ = register_module("patch_embed", vit_layers::PatchEmbed(config.patch_size, dim));
    auto blocks = register_module("blocks", nn::ModuleList());
    for (int64_t i = 0; i < config.depth; ++i) {
      const int64_t seed = config.shared_depth0_permutation ? 0 : i;
      FibottentionPattern pattern =
          MakeFibottentionPattern(FibottentionLayerOffsets(patches, config.num_heads, seed,
                                                           config.wmin, config.modified_wythoff),
                                  patches, /*class_token=*/true);
      FibBlock block(dim, dim * config.mlp_ratio,
                     FibAttention(dim, config.num_heads, std::move(pattern), config.semantics));
      blocks->push_back(block);
      blocks_.push_back(block);
    }
    norm_ = register_module("norm", vit_layers::MakeLayerNorm(dim));
    head_ = register_module("head", nn::Linear(dim, config.num_classes));
    c10::NoGradGuard no_grad;  // timm's init_weights('').
    layers::TruncNormal_(pos_embed_, 0.02);
    cls_token_.normal_(0.0, 1e-6);
    vit_layers::InitLinearsTimm(*this);
  }

  torch::Tensor forward(torch::Tensor images) override {
    TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == config_.img_size &&
                    images.size(3) == config_.img_size,
                "Fibottention ViT expects images [N,3,", config_.img_size, ",", config_.img_size,
                "], got ", images.sizes());
    at::Tensor x = patch_embed_->forward(images);
    x = at::cat({cls_token_.expand({x.size(0), -1, -1}), x}, 1) + pos_embed_;
    for (FibBlock& block : blocks_) x = block->forward(x);
    return head_->forward(norm_->forward(x).select(1, 0));
  }

 private:
  FibottentionVitConfig config_;
  at::Tensor cls_token_, pos_embed_;
  vit_layers::PatchEmbed patch_embed_{nullptr};
  std::vector<FibBlock> blocks_;
  nn::LayerNorm norm_{nullptr};
  nn::Linear head_{nullptr};
};

}  // namespace

std::shared_ptr<VisionModel> MakeFibottentionVit(const FibottentionVitConfig& config) {
  return std::make_shared<FibottentionVit>(config);
}

}  // namespace vitserve
