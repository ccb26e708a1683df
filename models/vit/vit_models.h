// Registers the ViT (vit_{tiny,small,base}_patch16_224) and DeiT (deit_{tiny,small,base}
// _patch16_224 and their _distilled variants) families with the model registry.
// Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second call).
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/vit/vision_transformer.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterVitModels(ModelRegistry& registry);

// The configuration that RegisterVitModels registers `architecture` with (224 px, 1000
// classes), for building it at another input size (MakeVisionTransformer with img_size
// changed; such a model takes no 224-px checkpoint). NOT_FOUND for a name it does not register.
absl::StatusOr<VitConfig> VitConfigForArchitecture(std::string_view architecture);

}  // namespace vitserve
