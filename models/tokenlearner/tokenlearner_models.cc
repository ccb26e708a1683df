#include "models/tokenlearner/tokenlearner_models.h"

#include <string>
#include <utility>

#include "common/status_macros.h"
#include "models/registry.h"
#include "models/tokenlearner/token_learner.h"

namespace vitserve {
namespace {

absl::Status RegisterOne(ModelRegistry& registry, std::string name, TokenLearnerVitConfig config) {
  ModelInfo info;
  info.architecture = std::move(name);
  info.family = "tokenlearner";
  info.input_size = config.img_size;
  info.input_size_fixed = true;  // Its position embedding is not interpolated.
  info.mean = {0.485f, 0.456f, 0.406f};
  info.std = {0.229f, 0.224f, 0.225f};
  info.crop_pct = 0.875;
  info.interpolation = "bicubic";
  return registry.Register(std::move(info), FactoryWithClassCount(config, MakeTokenLearnerVit));
}

}  // namespace

absl::Status RegisterTokenlearnerModels(ModelRegistry& registry) {
  TokenLearnerVitConfig small;  // Defaults: scenic's im1k_token_learner_config.py.
  small.embed_dim = 384;
  small.num_heads = 6;
  VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "vit_small_tokenlearner", small));
  TokenLearnerVitConfig base;
  return RegisterOne(registry, "vit_base_tokenlearner", base);
}

}  // namespace vitserve
