#include "models/vit/vit_models.h"

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/dense/task_model.h"
#include "models/registry.h"
#include "models/vit/vision_transformer.h"

namespace vitserve {
namespace {

// One registered ViT/DeiT: its name, family, configuration at 224 px and normalisation.
struct VitArchitecture {
  std::string name;
  std::string family;
  VitConfig config;
  std::array<float, 3> mean;
  std::array<float, 3> std;
};

// Every architecture RegisterVitModels registers, in one place so that the registry and
// VitConfigForArchitecture cannot disagree. Widths: ViT-Ti/S/B (DeiT Table 1; ViT paper Table 1
// for Base), patch 16, depth 12. timm's vit_*_patch16_224 (augreg) weights use Inception
// normalisation; DeiT ImageNet's.
std::vector<VitArchitecture> VitArchitectures() {
  struct Width {
    const char* size;  // "tiny", "small", "base"
    int64_t embed_dim;
    int64_t num_heads;
  };
  constexpr Width kWidths[] = {{"tiny", 192, 3}, {"small", 384, 6}, {"base", 768, 12}};
  constexpr std::array<float, 3> kInceptionMean{0.5f, 0.5f, 0.5f};
  constexpr std::array<float, 3> kInceptionStd{0.5f, 0.5f, 0.5f};
  constexpr std::array<float, 3> kImagenetMean{0.485f, 0.456f, 0.406f};
  constexpr std::array<float, 3> kImagenetStd{0.229f, 0.224f, 0.225f};
  std::vector<VitArchitecture> architectures;
  for (const Width& width : kWidths) {
    VitConfig config;
    config.embed_dim = width.embed_dim;
    config.num_heads = width.num_heads;
    const std::string size = width.size;
    architectures.push_back(
        {"vit_" + size + "_patch16_224", "vit", config, kInceptionMean, kInceptionStd});
    architectures.push_back(
        {"deit_" + size + "_patch16_224", "deit", config, kImagenetMean, kImagenetStd});
    config.distilled = true;
    architectures.push_back({"deit_" + size + "_distilled_patch16_224", "deit", config,
                             kImagenetMean, kImagenetStd});
  }
  return architectures;
}

absl::Status RegisterOne(ModelRegistry& registry, std::string name, std::string family,
                         VitConfig config, std::array<float, 3> mean, std::array<float, 3> std) {
  ModelInfo info;
  info.architecture = std::move(name);
  info.family = std::move(family);
  info.input_size = config.img_size;
  info.input_size_fixed = true;  // Its position embedding is not interpolated.
  info.mean = mean;
  info.std = std;
  info.crop_pct = 0.9;  // timm's pretrained_cfg for every ViT/DeiT registered here.
  info.interpolation = "bicubic";
  // Classification as timm builds it, or the backbone without its classifier (ViTDet's simple
  // feature pyramid, vision_transformer.h) under a segmentation decoder or a detector, at the
  // registered input size (the position embedding is not interpolated).
  info.tasks = {ModelTask::kClassification, ModelTask::kSegmentation, ModelTask::kDetection};
  ModelFactory factory = [config](const ModelInfo& built) {
    return MakeModelForTask(built, [&config](bool classifier, int64_t num_classes) {
      VitConfig sized = config;
      sized.num_classes = num_classes;
      sized.classifier = classifier;
      return MakeVisionTransformer(sized);
    });
  };
  return registry.Register(std::move(info), std::move(factory));
}

}  // namespace

absl::Status RegisterVitModels(ModelRegistry& registry) {
  for (VitArchitecture& architecture : VitArchitectures()) {
    VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, std::move(architecture.name),
                                         std::move(architecture.family), architecture.config,
                                         architecture.mean, architecture.std));
  }
  return absl::OkStatus();
}

absl::StatusOr<VitConfig> VitConfigForArchitecture(std::string_view architecture) {
  for (const VitArchitecture& candidate : VitArchitectures()) {
    if (candidate.name == architecture) return candidate.config;
  }
  return absl::NotFoundError(absl::StrCat("'", std::string(architecture),
                                          "' is not a ViT or DeiT architecture of the registry"));
}

}  // namespace vitserve
