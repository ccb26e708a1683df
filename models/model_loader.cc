#include "models/model_loader.h"

#include <exception>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/layers/vit_layers.h"
#include "models/weights/safetensors.h"
#include "models/weights/state_dict.h"

namespace vitserve {

absl::StatusOr<LoadedModel> LoadModel(const ModelRegistry& registry, std::string_view architecture,
                                      const LoadOptions& options) {
  LoadedModel loaded;
  VITSERVE_ASSIGN_OR_RETURN(const ModelInfo* info, registry.FindInfo(architecture));
  if (options.task.has_value() || options.num_classes > 0) {
    VITSERVE_ASSIGN_OR_RETURN(
        ModelRegistry::TaskModel built,
        registry.CreateForTask(architecture, options.task.value_or(info->task),
                               options.num_classes > 0 ? options.num_classes : info->num_classes));
    loaded.info = std::move(built.info);
    loaded.module = std::move(built.model);
  } else {
    loaded.info = *info;
    VITSERVE_ASSIGN_OR_RETURN(loaded.module, registry.Create(architecture));
  }
  // A module registered under two names (ViTTM's memory_embedder is its patch_embed) appears
  // twice in LibTorch's parameters(); PyTorch's parameters() and timm count it once, and so do we.
  std::unordered_set<const c10::TensorImpl*> counted;
  for (const at::Tensor& parameter : loaded.module->parameters()) {
    if (counted.insert(parameter.unsafeGetTensorImpl()).second) {
      loaded.parameter_count += parameter.numel();
    }
  }
  if (options.weights_path.empty()) {
    loaded.random_weights = true;
  } else {
    VITSERVE_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(options.weights_path));
    absl::Status status = LoadStateDict(*loaded.module, file);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat("loading '", std::string(architecture),
                                                      "': ", status.message()));
    }
  }
  try {
    loaded.module->eval();
    if (options.fuse_for_inference) loaded.module->FuseForInference();
    vit_layers::SetApproximateGelu(*loaded.module, options.approximate_gelu);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("preparing '", std::string(architecture),
                                            "' for inference failed: ", e.what()));
  }
  return loaded;
}

}  // namespace vitserve
