// Registers the ViT (vit_{tiny,small,base}_patch16_224) and DeiT (deit_{tiny,small,base}
// _patch16_224 and their _distilled variants) families with the model registry.
// Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second call).
#pragma once

#include "absl/status/status.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterVitModels(ModelRegistry& registry);

}  // namespace vitserve
