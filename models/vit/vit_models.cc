#include "models/vit/vit_models.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/dense/task_model.h"
#include "models/registry.h"
#include "models/vit/vision_transformer.h"

namespace vitserve {
namespace {

struct Width {
  const char* size;  // "tiny", "small", "base"
  int64_t embed_dim;
  int64_t num_heads;
};

// ViT-Ti/S/B (DeiT Table 1 widths; ViT paper Table 1 for Base), patch 16, depth 12.
constexpr Width kWidths[] = {{"tiny", 192, 3}, {"small", 384, 6}, {"base", 768, 12}};

absl::Status RegisterOne(ModelRegistry& registry, std::string name, std::string family,
                         VitConfig config, std::array<float, 3> mean, std::array<float, 3> std) {
  ModelInfo info;
  info.architecture = std::move(name);
  info.family = std::move(family);
  info.input_size = config.img_size;
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
  // timm's vit_*_patch16_224 (augreg) weights use Inception normalisation; DeiT ImageNet's.
  constexpr std::array<float, 3> kInceptionMean{0.5f, 0.5f, 0.5f};
  constexpr std::array<float, 3> kInceptionStd{0.5f, 0.5f, 0.5f};
  constexpr std::array<float, 3> kImagenetMean{0.485f, 0.456f, 0.406f};
  constexpr std::array<float, 3> kImagenetStd{0.229f, 0.224f, 0.225f};
  for (const Width& width : kWidths) {
    VitConfig config;
    config.embed_dim = width.embed_dim;
    config.num_heads = width.num_heads;
    const std::string size = width.size;
    VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "vit_" + size + "_patch16_224", "vit", config,
                                         kInceptionMean, kInceptionStd));
    VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "deit_" + size + "_patch16_224", "deit", config,
                                         kImagenetMean, kImagenetStd));
    config.distilled = true;
    VITSERVE_RETURN_IF_ERROR(RegisterOne(registry, "deit_" + size + "_distilled_patch16_224",
                                         "deit", config, kImagenetMean, kImagenetStd));
  }
  return absl::OkStatus();
}

absl::StatusOr<VitConfig> VitConfigForArchitecture(std::string_view architecture) {
  for (const Width& width : kWidths) {
    const std::string size = width.size;
    for (const bool distilled : {false, true}) {
      const bool named = distilled ? architecture == "deit_" + size + "_distilled_patch16_224"
                                   : architecture == "vit_" + size + "_patch16_224" ||
                                         architecture == "deit_" + size + "_patch16_224";
      if (!named) continue;
      VitConfig config;
      config.embed_dim = width.embed_dim;
      config.num_heads = width.num_heads;
      config.distilled = distilled;
      return config;
    }
  }
  return absl::NotFoundError(absl::StrCat("'", std::string(architecture),
                                          "' is not a ViT or DeiT architecture of the registry"));
}

}  // namespace vitserve
