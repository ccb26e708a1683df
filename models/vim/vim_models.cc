#include "models/vim/vim_models.h"

#include <array>
#include <string>
#include <utility>

#include "common/status_macros.h"
#include "models/registry.h"
#include "models/vim/vision_mamba.h"

namespace vitserve {
namespace {

absl::Status RegisterOne(ModelRegistry& registry, std::string name, VimConfig config) {
  ModelInfo info;
  info.architecture = std::move(name);
  info.family = "vim";
  info.input_size = config.img_size;
  info.mean = {0.485f, 0.456f, 0.406f};  // timm's IMAGENET_DEFAULT_MEAN/STD, as Vim's eval.
  info.std = {0.229f, 0.224f, 0.225f};
  info.crop_pct = 0.875;  // main.py --eval-crop-ratio default.
  info.interpolation = "bicubic";
  return registry.Register(std::move(info), FactoryWithClassCount(config, MakeVisionMamba));
}

}  // namespace

absl::Status RegisterVimModels(ModelRegistry& registry) {
  // Vim-Ti / Vim-S (paper Table 1; models_mamba.py vim_{tiny,small}_patch16_224_bimambav2_...).
  VimConfig tiny;
  tiny.embed_dim = 192;
  VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "vim_tiny", tiny));
  VimConfig small;
  small.embed_dim = 384;
  return RegisterOne(registry, "vim_small", small);
}

}  // namespace vitserve
