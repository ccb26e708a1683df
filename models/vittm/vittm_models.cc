#include "models/vittm/vittm_models.h"

#include <string>
#include <utility>

#include "common/status_macros.h"
#include "models/registry.h"
#include "models/vittm/vittm.h"

namespace vitserve {
namespace {

absl::Status RegisterOne(ModelRegistry& registry, std::string name, VittmConfig config) {
  ModelInfo info;
  info.architecture = std::move(name);
  info.family = "vittm";
  info.input_size = config.img_size;
  info.input_size_fixed = true;  // Its position embedding is not interpolated.
  info.mean = {0.485f, 0.456f, 0.406f};  // timm IMAGENET_DEFAULT_MEAN/STD (datasets/imagenet).
  info.std = {0.229f, 0.224f, 0.225f};
  info.crop_pct = 0.875;  // Resize(256, bicubic) → CenterCrop(224).
  info.interpolation = "bicubic";
  return registry.Register(std::move(info), FactoryWithClassCount(config, MakeVittm));
}

}  // namespace

absl::Status RegisterVittmModels(ModelRegistry& registry) {
  VittmConfig small;  // Defaults: memory_ps 16, process_ps 32, "lin", scale 4, "residual".
  small.embed_dim = 384;
  small.num_heads = 6;
  VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "vittm_small", small));
  VittmConfig base;
  VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "vittm_base", base));
  VittmConfig base28;  // README "ViTTM-B-28": --memory-ps 28 --process-ps 28.
  base28.memory_ps = 28;
  base28.process_ps = 28;
  return RegisterOne(registry, "vittm_base_28", base28);
}

}  // namespace vitserve
