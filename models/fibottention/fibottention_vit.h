// ViT/DeiT with Fibottention self-attention (arXiv 2406.19391, Sec. 3.2): timm's
// VisionTransformer layout and names (cls_token, pos_embed, patch_embed.proj, blocks.i.{norm1,
// attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head; class-token classifier), so a timm
// DeiT/ViT checkpoint loads unchanged; only the attention differs: per-head Fibonacci/Wythoff
// dilated masks (fibottention.h), evaluated by the sparse kernel on the kept pairs only. The
// model is MakeVisionTransformer with a Fibottention attention in every block.
// Layer i uses the heads' permutation of Python's random.seed(i) (the design); with
// `shared_depth0_permutation` every layer uses depth 0's, as the released code ends up doing
// through its global mask cache.
// Ownership/thread-safety/errors: see vision_model.h. The per-device copy of the mask pattern is
// made on first use under a mutex, so concurrent forward() calls are safe.
#pragma once

#include <cstdint>
#include <memory>

#include "models/fibottention/fibottention.h"
#include "models/vision_model.h"

namespace vitserve {

struct FibottentionVitConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t mlp_ratio = 4;
  FibottentionSemantics semantics = FibottentionSemantics::kOfficial;
  int64_t wmin = 5;
  bool modified_wythoff = false;  // The released image models use is_modified=False.
  bool shared_depth0_permutation = false;
  int64_t num_classes = 1000;
};

// Throws c10::Error on an inconsistent config.
std::shared_ptr<VisionModel> MakeFibottentionVit(const FibottentionVitConfig& config);

}  // namespace vitserve
