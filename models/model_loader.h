// Builds a zoo model by name and loads its weights: the one call the server makes to get a
// ready-to-run model.
//
// LoadModel() creates the architecture from the registry, loads a .safetensors checkpoint
// strictly by name (weights/state_dict.h) or keeps timm-style random initialisation when no
// path is given, switches to eval(), and optionally folds BatchNorm for inference.
// Ownership: the returned LoadedModel owns a new module, not shared with anyone.
// Thread-safety: independent calls may run concurrently (they share only the const registry);
// random initialisation draws from torch's global generator.
// Errors: NOT_FOUND (unknown architecture or missing weights file), INVALID_ARGUMENT (corrupt
// file or a checkpoint that does not match the architecture; the message names the tensors),
// INTERNAL (torch failed while building or folding). c10::Error never escapes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "models/model_info.h"
#include "models/registry.h"
#include "models/vision_model.h"

namespace vitserve {

struct LoadOptions {
  std::string weights_path;  // .safetensors; empty -> random initialisation (as timm initialises)
  bool fuse_for_inference = true;
  // ViT-family MLPs on CUDA in fp16/bf16 compute GELU in its tanh form inside their first matrix
  // product (vit_layers::MlpImpl::set_approximate_gelu); false: exact GELU, as timm.
  bool approximate_gelu = false;
  // The architecture built for another task it supports, or with another class count
  // (ModelRegistry::CreateForTask); unset / 0: as registered.
  std::optional<ModelTask> task;
  int64_t num_classes = 0;
};

struct LoadedModel {
  std::shared_ptr<VisionModel> module;  // eval() mode, on CPU, fp32
  ModelInfo info;
  int64_t parameter_count = 0;  // of the checkpoint layout (before folding), equals timm's
  bool random_weights = false;
};

absl::StatusOr<LoadedModel> LoadModel(const ModelRegistry& registry, std::string_view architecture,
                                      const LoadOptions& options);

}  // namespace vitserve
