// Static description of a zoo architecture: what it computes and how its input must be prepared.
//
// A ModelInfo is plain data, copied freely; it is registered once per architecture in the
// ModelRegistry (registry.h) and handed to the server so that preprocessing (resize, crop,
// normalisation) matches what the weights were trained with. Values mirror timm's
// `pretrained_cfg` for the same architecture name.
// Thread-safety: immutable value type. Errors: none.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vitserve {

enum class ModelTask { kClassification, kDetection, kSegmentation };

// "classification", "detection" or "segmentation".
std::string_view ModelTaskName(ModelTask task);

struct ModelInfo {
  std::string architecture;  // Registry name, e.g. "shvit_s1" (timm's model name).
  std::string family;        // "vit", "deit", "shvit".
  ModelTask task = ModelTask::kClassification;
  int64_t input_size = 224;     // Square input in pixels.
  // True when the weights fix the input size (a position embedding laid out for input_size and
  // not interpolated): a config may not ask for another size.
  bool input_size_fixed = false;
  std::array<float, 3> mean{};  // RGB, in [0,1] units (timm's pretrained_cfg).
  std::array<float, 3> std{};
  // timm's eval transform: resize the shorter side to input_size / crop_pct, then centre crop.
  double crop_pct = 0.875;
  std::string interpolation = "bicubic";  // "bicubic" | "bilinear"
  int64_t num_classes = 1000;
  // Every task this architecture can be built for (ModelRegistry::CreateForTask), `task` first:
  // backbones with feature maps also carry dense heads.
  std::vector<ModelTask> tasks{ModelTask::kClassification};
};

}  // namespace vitserve
