#include "models/fibottention/fibottention_models.h"

#include <array>
#include <string>
#include <utility>

#include "common/status_macros.h"
#include "models/fibottention/fibottention_vit.h"
#include "models/registry.h"

namespace vitserve {
namespace {

absl::Status RegisterOne(ModelRegistry& registry, std::string name, std::string family,
                         FibottentionVitConfig config, std::array<float, 3> mean,
                         std::array<float, 3> std) {
  ModelInfo info;
  info.architecture = std::move(name);
  info.family = std::move(family);
  info.input_size = config.img_size;
  info.input_size_fixed = true;  // Its position embedding is not interpolated.
  info.mean = mean;
  info.std = std;
  info.crop_pct = 0.9;  // timm's pretrained_cfg of the DeiT/ViT weights these load.
  info.interpolation = "bicubic";
  return registry.Register(std::move(info), FactoryWithClassCount(config, MakeFibottentionVit));
}

}  // namespace

absl::Status RegisterFibottentionModels(ModelRegistry& registry) {
  FibottentionVitConfig small;
  small.embed_dim = 384;
  small.num_heads = 6;
  VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "deit_small_fibottention", "fibottention", small,
                                       {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}));
  FibottentionVitConfig base;
  return RegisterOne(registry, "vit_base_fibottention", "fibottention", base, {0.5f, 0.5f, 0.5f},
                     {0.5f, 0.5f, 0.5f});
}

}  // namespace vitserve
