#include "models/model_info.h"

namespace vitserve {

std::string_view ModelTaskName(ModelTask task) {
  switch (task) {
    case ModelTask::kClassification:
      return "classification";
    case ModelTask::kDetection:
      return "detection";
    case ModelTask::kSegmentation:
      return "segmentation";
  }
  return "unknown";
}

}  // namespace vitserve
