#include "server/api/detect.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/heads/center_decode.h"
#include "server/config/model_config.h"

namespace vitserve {

absl::StatusOr<DetectSettings> ValidateDetectRequest(const v1::DetectRequest& request,
                                                     std::string_view model, ModelTask task,
                                                     const v1::DetectionConfig& defaults) {
  if (task != ModelTask::kDetection) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", std::string(model), "' is a ", std::string(ModelTaskName(task)),
                     " model; Detect needs a detection model"));
  }
  if (request.images_size() == 0) {
    return absl::InvalidArgumentError("no images: a DetectRequest needs at least one image");
  }
  return ResolveDetectSettings(request.score_threshold(), request.max_detections(), defaults);
}

absl::StatusOr<DetectSettings> ResolveDetectSettings(double score_threshold,
                                                     int64_t max_detections,
                                                     const v1::DetectionConfig& defaults) {
  if (!(score_threshold >= 0.0 && score_threshold <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "score_threshold ", score_threshold,
        " is out of range: allowed 0..1 (0 takes the model's default, ", defaults.score_threshold(),
        ")"));
  }
  if (max_detections < 0 || max_detections > kMaxDetections) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_detections ", max_detections, " is out of range: allowed 1..", kMaxDetections,
        " (0 takes the model's default, ", defaults.max_detections(), ")"));
  }
  DetectSettings settings;
  settings.score_threshold = score_threshold > 0 ? score_threshold : defaults.score_threshold();
  settings.max_detections = max_detections > 0 ? max_detections : defaults.max_detections();
  return settings;
}

absl::Status FillDetections(const at::Tensor& outputs, int64_t num_classes, int64_t input_size,
                            const std::vector<InputGeometry>& geometries,
                            const DetectSettings& settings,
                            const std::vector<std::string>& labels,
                            v1::DetectResponse* response) {
  if (!outputs.defined() || outputs.dim() != 4 ||
      outputs.size(0) != static_cast<int64_t>(geometries.size())) {
    return absl::InternalError(absl::StrCat(
        "detection output must be [", geometries.size(), ",C+4,h,w], got ",
        outputs.defined() ? c10::str(outputs.sizes()) : std::string("nothing")));
  }
  for (size_t i = 0; i < geometries.size(); ++i) {
    VITSERVE_ASSIGN_OR_RETURN(
        std::vector<CenterDetection> found,
        DecodeCenters(outputs[static_cast<int64_t>(i)], num_classes, input_size,
                      settings.score_threshold, settings.max_detections));
    v1::Detections* detections = response->add_results();
    for (const CenterDetection& d : found) {
      const PixelBox box = BoxToOriginal(PixelBox{d.x1, d.y1, d.x2, d.y2}, geometries[i]);
      v1::Box* out = detections->add_boxes();
      out->set_x1(box.x1);
      out->set_y1(box.y1);
      out->set_x2(box.x2);
      out->set_y2(box.y2);
      out->set_score(d.score);
      out->set_index(static_cast<int32_t>(d.class_index));
      out->set_label(d.class_index < static_cast<int64_t>(labels.size())
                         ? labels[static_cast<size_t>(d.class_index)]
                         : absl::StrCat(d.class_index));
    }
  }
  return absl::OkStatus();
}

}  // namespace vitserve
