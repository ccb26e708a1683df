#include "models/dense/task_model.h"

#include "models/dense/detection.h"
#include "models/dense/segmentation.h"

namespace vitserve {

std::shared_ptr<VisionModel> MakeModelForTask(const ModelInfo& info, const BackboneMaker& make) {
  if (info.task == ModelTask::kClassification) return make(/*classifier=*/true, info.num_classes);
  if (info.task == ModelTask::kDetection) {
    DetectionOptions options;
    options.num_classes = info.num_classes;
    return MakeDetectionModel(make(/*classifier=*/false, info.num_classes), options);
  }
  SegmentationOptions options;
  options.num_classes = info.num_classes;
  return MakeSegmentationModel(make(/*classifier=*/false, info.num_classes), options);
}

}  // namespace vitserve
