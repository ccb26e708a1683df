#include "models/fibottention/fibottention_vit.h"

#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "models/layers/vit_layers.h"
#include "models/vit/vision_transformer.h"

namespace vitserve {
namespace {

// timm's Attention (children qkv, proj) with the attention itself replaced by Fibottention on
// this layer's pattern.
class FibAttentionImpl final : public vit_layers::AttentionImpl {
 public:
  FibAttentionImpl(int64_t dim, int64_t heads, FibottentionPattern pattern,
                   FibottentionSemantics semantics)
      : vit_layers::AttentionImpl(dim, heads),
        scale_(1.0 / std::sqrt(static_cast<double>(dim / heads))),
        semantics_(semantics),
        pattern_(std::move(pattern)) {}

  at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override {
    return FibottentionAttention(q, k, v, PatternOn(q.device()), semantics_, scale_);
  }

 private:
  // The pattern's index tensors on `device`, copied there on first use.
  const FibottentionPattern& PatternOn(const at::Device& device) {
    if (device.is_cpu()) return pattern_;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = on_device_.find(device.str());
    if (it == on_device_.end())
      it = on_device_.emplace(device.str(), PatternTo(pattern_, device)).first;
    return it->second;  // std::map nodes are stable; entries are never erased.
  }

  double scale_;
  FibottentionSemantics semantics_;
  FibottentionPattern pattern_;  // CPU.
  std::mutex mu_;
  std::map<std::string, FibottentionPattern> on_device_;  // Guarded by mu_.
};

}  // namespace

std::shared_ptr<VisionModel> MakeFibottentionVit(const FibottentionVitConfig& config) {
  VitConfig vit;
  vit.img_size = config.img_size;
  vit.patch_size = config.patch_size;
  vit.embed_dim = config.embed_dim;
  vit.depth = config.depth;
  vit.num_heads = config.num_heads;
  vit.mlp_ratio = config.mlp_ratio;
  vit.num_classes = config.num_classes;
  TORCH_CHECK(config.patch_size > 0 && config.img_size % config.patch_size == 0, "image size ",
              config.img_size, " is not a multiple of the patch size ", config.patch_size);
  const int64_t grid = config.img_size / config.patch_size;
  const int64_t patches = grid * grid;
  return MakeVisionTransformer(vit, [config, patches](int64_t layer) {
    const int64_t seed = config.shared_depth0_permutation ? 0 : layer;
    FibottentionPattern pattern = MakeFibottentionPattern(
        FibottentionLayerOffsets(patches, config.num_heads, seed, config.wmin,
                                 config.modified_wythoff),
        patches, /*class_token=*/true);
    return std::make_shared<FibAttentionImpl>(config.embed_dim, config.num_heads,
                                              std::move(pattern), config.semantics);
  });
}

}  // namespace vitserve
