// Vision Transformer (Dosovitskiy et al., arXiv 2010.11929, Sec. 3.1, Eq. 1–4) and DeiT
// (Touvron et al., arXiv 2012.12877; Sec. 4, "Distillation through attention", for the distillation
// token and the joint classifier), laid out exactly as timm's `vision_transformer.py` / `deit.py`
// so timm checkpoints load by name:
//   patch_embed.proj (P×P conv, stride P) → [cls_token (, dist_token)] ++ patches → + pos_embed
//   → blocks.i: x + attn(norm1(x)), x + mlp(norm2(x)) (pre-norm, Eq. 2–3; LayerNorm ε = 1e-6,
//     exact GELU) → norm → head(x[:,0])  (distilled: (head(x[:,0]) + head_dist(x[:,1])) / 2, the
//     average DeiT uses at test time).
// Attention runs through at::scaled_dot_product_attention, so GPUs use the fused kernels.
// No BatchNorm, so FuseForInference() is the default no-op.
// Built without a classifier (VitConfig::classifier false: no head, head_dist), it serves
// Features() for detection and segmentation heads instead: ViTDet's simple feature pyramid
// (Li et al., arXiv 2203.16527, Sec. 3) from the last block's patch tokens after `norm`, as a
// [N, D, H/16, W/16] map: stride 4 via two 2x2 transposed convolutions with a GELU between
// (D/4 channels; "simfp_2.0", "simfp_2.2"), stride 8 via one (D/2; "simfp_3.0"), stride 16 the map
// itself (D), stride 32 a 2x2 max-pool (D). The channel projections are the decoder's (its
// lateral convolutions), not ViTDet's per-level 1x1 + 3x3 convolutions.
// Ownership/thread-safety/errors: see vision_model.h. forward() and Features() need exactly
// img_size × img_size input (the position embedding is not interpolated), like timm's default.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "models/vision_model.h"

namespace vitserve {
namespace vit_layers {
class AttentionImpl;
}  // namespace vit_layers

struct VitConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t mlp_ratio = 4;
  bool distilled = false;  // DeiT's extra distillation token and head.
  int64_t num_classes = 1000;
  // false: no classification head; the model then serves only Features() (the feature
  // pyramid above), for a detection or segmentation head.
  bool classifier = true;
};

// Builds the attention of block `layer` (0-based): a subclass of vit_layers::AttentionImpl
// (models/layers/vit_layers.h) with the config's width and heads. This is how a ViT variant that
// differs only in its attention (Fibottention) reuses the whole model.
using VitAttentionFactory =
    std::function<std::shared_ptr<vit_layers::AttentionImpl>(int64_t layer)>;

// A randomly initialised ViT/DeiT, initialised as timm does (trunc-normal 0.02 linears and
// position embedding, cls token N(0, 1e-6)). Without `attention`, every block uses
// scaled_dot_product_attention. Throws c10::Error on an inconsistent config.
std::shared_ptr<VisionModel> MakeVisionTransformer(const VitConfig& config,
                                                   VitAttentionFactory attention = {});

}  // namespace vitserve
