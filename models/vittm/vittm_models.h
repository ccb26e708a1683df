// Registers the ViTTM family with the model registry, all with the released read/write setting
// (linear-attention heads, QK width embed_dim / 4, add fusion, memory-head output) and 224 px:
//   vittm_small    ViT-S widths (384, 12 layers, 6 heads), memory_ps 16 / process_ps 32
//                  (196 memory / 49 process tokens: the code's default patch sizes)
//   vittm_base     ViT-B widths (768, 12, 12), memory_ps 16 / process_ps 32
//   vittm_base_28  ViT-B, memory_ps 28 / process_ps 28 (64 / 64 tokens): the released ViTTM-B-28
// Preprocessing as the official evaluation (datasets/imagenet): ImageNet mean/std, bicubic
// resize of the shorter side to 256, centre crop 224.
// Errors: those of ModelRegistry::Register (ALREADY_EXISTS on a second call).
#pragma once

#include "absl/status/status.h"

namespace vitserve {

class ModelRegistry;
absl::Status RegisterVittmModels(ModelRegistry& registry);

}  // namespace vitserve
