// Registers the TokenLearner ViT family with the model registry: vit_small_tokenlearner
// (D = 384, 6 heads) and vit_base_tokenlearner (D = 768, 12 heads), patch 16, 224 px, 12 blocks,
// scenic's shipped ImageNet setting (16 learned tokens before block index 9, v1.1, no fuser, global
// average pooling). Preprocessing: ImageNet mean/std, resize to 224 / 0.875 and centre crop,
// bicubic (scenic's ImageNet pipeline; not checked against a released checkpoint).
// Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second call).
#pragma once

#include "absl/status/status.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterTokenlearnerModels(ModelRegistry& registry);

}  // namespace vitserve
