#include "models/shvit/shvit_models.h"

#include <string>
#include <utility>

#include "common/status_macros.h"
#include "models/dense/task_model.h"
#include "models/registry.h"
#include "models/shvit/shvit.h"

namespace vitserve {
namespace {

struct Variant {
  const char* name;
  ShvitConfig config;
  int64_t input_size;
};

}  // namespace

absl::Status RegisterShvitModels(ModelRegistry& registry) {
  // The paper's S1–S4 variants; widths, depths and partial dims as timm's shvit_s1..s4.
  const Variant variants[] = {
      {"shvit_s1", {{128, 224, 320}, {2, 4, 5}, {32, 48, 68}}, 224},
      {"shvit_s2", {{128, 308, 448}, {2, 4, 5}, {32, 66, 96}}, 224},
      {"shvit_s3", {{192, 352, 448}, {3, 5, 5}, {48, 75, 96}}, 224},
      {"shvit_s4", {{224, 336, 448}, {4, 7, 6}, {48, 72, 96}}, 256},
  };
  for (const Variant& variant : variants) {
    ModelInfo info;
    info.architecture = variant.name;
    info.family = "shvit";
    info.input_size = variant.input_size;
    info.mean = {0.485f, 0.456f, 0.406f};  // IMAGENET_DEFAULT_MEAN/STD
    info.std = {0.229f, 0.224f, 0.225f};
    info.crop_pct = 0.875;
    info.interpolation = "bicubic";
    // Classification as timm builds it, or the backbone without its classifier under a
    // segmentation decoder or a detector (models/dense/).
    info.tasks = {ModelTask::kClassification, ModelTask::kSegmentation, ModelTask::kDetection};
    ModelFactory factory = [config = variant.config](const ModelInfo& built) {
      return MakeModelForTask(built, [&config](bool classifier, int64_t num_classes) {
        ShvitConfig sized = config;
        sized.num_classes = num_classes;
        sized.classifier = classifier;
        return MakeShvit(sized);
      });
    };
    VITSERVE_RETURN_IF_ERROR(registry.Register(std::move(info), std::move(factory)));
  }
  return absl::OkStatus();
}

}  // namespace vitserve
