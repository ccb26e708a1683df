// Registers the Vision Mamba family with the model registry: vim_tiny (D = 192, dt_rank 12) and
// vim_small (D = 384, dt_rank 24), both 24 layers, d_state 16, expand 2, d_conv 4, patch 16,
// 224 px. Preprocessing follows the official evaluation (Vim's datasets.py / main.py, inherited
// from DeiT): ImageNet mean/std, bicubic resize to 224 / 0.875 and centre crop.
// Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second call).
#pragma once

#include "absl/status/status.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterVimModels(ModelRegistry& registry);

}  // namespace vitserve
