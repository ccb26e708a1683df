#include "server/api/segment.h"

#include <ATen/ATen.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/api/image_input.h"

namespace vitserve {

absl::Status ValidateSegmentRequest(const v1::SegmentRequest& request, std::string_view model,
                                    ModelTask task) {
  if (task != ModelTask::kSegmentation) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", std::string(model), "' is a ", std::string(ModelTaskName(task)),
                     " model; Segment needs a segmentation model"));
  }
  if (request.images_size() == 0) {
    return absl::InvalidArgumentError("no images: a SegmentRequest needs at least one image");
  }
  if (!v1::SegmentRequest::MaskFormat_IsValid(request.format())) {
    return absl::InvalidArgumentError(
        absl::StrCat("format ", static_cast<int>(request.format()), " is unknown; use PNG or RAW"));
  }
  return absl::OkStatus();
}

absl::Status FillSegmentations(const at::Tensor& scores,
                               const std::vector<InputGeometry>& geometries,
                               v1::SegmentRequest::MaskFormat format,
                               const std::vector<std::string>& labels,
                               v1::SegmentResponse* response) {
  if (!scores.defined() || scores.dim() != 4 ||
      scores.size(0) != static_cast<int64_t>(geometries.size())) {
    return absl::InternalError(absl::StrCat(
        "segmentation output must be [", geometries.size(), ",C,h,w], got ",
        scores.defined() ? c10::str(scores.sizes()) : std::string("nothing")));
  }
  const LabelMapFormat wire =
      format == v1::SegmentRequest::RAW ? LabelMapFormat::kRaw : LabelMapFormat::kPng;
  for (size_t i = 0; i < geometries.size(); ++i) {
    VITSERVE_ASSIGN_OR_RETURN(cv::Mat labels_map,
                              LabelMapToOriginal(scores[static_cast<int64_t>(i)], geometries[i]));
    VITSERVE_ASSIGN_OR_RETURN(std::string mask, EncodeLabelMap(labels_map, wire));
    v1::SegmentationMap* map = response->add_results();
    map->set_width(static_cast<uint32_t>(geometries[i].original_width));
    map->set_height(static_cast<uint32_t>(geometries[i].original_height));
    map->set_mask(std::move(mask));
  }
  for (const std::string& label : labels) response->add_labels(label);
  return absl::OkStatus();
}

}  // namespace vitserve
