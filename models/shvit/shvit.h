// SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design (Yun & Ro, CVPR 2024,
// arXiv 2401.16456), laid out exactly as timm's `timm/models/shvit.py` so timm checkpoints load
// by name.
//
//   stem ("memory-efficient macro design", the 16×16 overlapping patchify stem of Fig. 5):
//        four 3×3 stride-2 Conv+BN, ReLU between → 16× downsampling
//   stages: [downsample] + blocks; block = Residual(3×3 depthwise Conv+BN)
//                                        → Residual(SHSA) (stages 2–3 only)
//                                        → Residual(FFN: 1×1 Conv+BN, ReLU, 1×1 Conv+BN)
//   SHSA (the single-head self-attention module, Sec. 3): attention over the first `pdim`
//        channels only, after GroupNorm(1); q,k of width 16, no positional bias; concat with the
//        untouched channels, ReLU, 1×1 Conv+BN.
//   downsample between stages: Residual(dw), Residual(FFN), PatchMerging (1×1 to 4C, ReLU, 3×3
//        stride-2 dw, ReLU, squeeze-excite, 1×1 to the next width), Residual(dw), Residual(FFN)
//   head: global average pool → BatchNorm1d → Linear.
// FuseForInference() folds every Conv+BN, each residual depthwise conv's identity (+1 at the
// kernel centre), and the head's BN1d+Linear; GroupNorm stays.
// Paper section/equation numbers are not cited more precisely than this on purpose: they
// could not be checked here; Fig. 5 (architecture overview) and the module names are.
// Feature maps (FeatureLevels/Features): the stem after its second and third convolutions
// (strides 4 and 8, C1/4 and C1/2 channels) and each stage's output (strides 16, 32, 64).
// Ownership/thread-safety/errors: see vision_model.h. forward() accepts any H, W ≥ 1.
#pragma once

#include <array>
#include <cstdint>
#include <memory>

#include "models/model_info.h"
#include "models/vision_model.h"

namespace vitserve {

struct ShvitConfig {
  std::array<int64_t, 3> embed_dim{};
  std::array<int64_t, 3> depth{};
  std::array<int64_t, 3> partial_dim{};
  std::array<bool, 3> attention{false, true, true};  // timm's types ("i", "s", "s").
  int64_t qk_dim = 16;
  int64_t num_classes = 1000;
  // false: no classification head ("head.*"); the model then serves only Features(), for a
  // detection or segmentation head.
  bool classifier = true;
};

// A randomly initialised SHViT as timm initialises it (BN γ = 0 on each residual branch's last
// BN). Throws c10::Error on an inconsistent config.
std::shared_ptr<VisionModel> MakeShvit(const ShvitConfig& config);

}  // namespace vitserve
