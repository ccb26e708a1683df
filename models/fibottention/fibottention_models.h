// Registers the Fibottention family with the model registry, timm ViT/DeiT layouts at 224 px,
// patch 16, 12 blocks, official (multiplicative) mask semantics:
//   deit_small_fibottention  DeiT-S widths (384, 6 heads); loads deit_small_patch16_224 weights;
//                            DeiT preprocessing (ImageNet mean/std, crop 0.9, bicubic)
//   vit_base_fibottention    ViT-B widths (768, 12 heads); loads vit_base_patch16_224 weights;
//                            its preprocessing (mean = std = 0.5, crop 0.9, bicubic)
// Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second call).
#pragma once

#include "absl/status/status.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterFibottentionModels(ModelRegistry& registry);

}  // namespace vitserve
