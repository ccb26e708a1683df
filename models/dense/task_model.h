// The model a registry entry builds for its task, for families whose backbone gives feature maps
// (VisionModel::FeatureLevels/Features): the classifier itself, or the backbone built without a
// classifier under the segmentation decoder (segmentation.h) or the detector (detection.h), with
// the task's class count. Throws what the backbone or the head throws (c10::Error).
#pragma once

#include <functional>
#include <memory>

#include "models/model_info.h"
#include "models/vision_model.h"

namespace vitserve {

// `make(classifier, num_classes)` builds the family's model: with its classification head when
// `classifier` is true, else the backbone only.
using BackboneMaker =
    std::function<std::shared_ptr<VisionModel>(bool classifier, int64_t num_classes)>;

std::shared_ptr<VisionModel> MakeModelForTask(const ModelInfo& info, const BackboneMaker& make);

}  // namespace vitserve
