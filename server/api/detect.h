// The protocol-level steps of a Detect request, free of gRPC and of the model manager: validate
// the request against the model's defaults, and turn each row of the model's CenterNet output
// (models/dense/detection.h) into boxes in the image's original pixels with labels. Decoding
// and preprocessing are DecodeAndPreprocessWhole's (image_input.h), as for Segment.
//
// Thread-safety: pure functions. Errors: INVALID_ARGUMENT saying what was wrong and what is
// allowed.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/model_info.h"
#include "server/image/dense_output.h"
#include "vitserve/v1/model_config.pb.h"
#include "vitserve/v1/vision.pb.h"

namespace vitserve {

struct DetectSettings {
  double score_threshold = 0.3;
  int64_t max_detections = 100;
};

// The request's score_threshold and max_detections, or the model's defaults (`detection`) where
// the request leaves them 0. INVALID_ARGUMENT: not a detection model, no images, a threshold
// outside [0, 1], more than kMaxDetections detections.
absl::StatusOr<DetectSettings> ValidateDetectRequest(const v1::DetectRequest& request,
                                                     std::string_view model, ModelTask task,
                                                     const v1::DetectionConfig& defaults);

// `score_threshold` and `max_detections` as a request gives them (0: the model's default), checked
// as ValidateDetectRequest does.
absl::StatusOr<DetectSettings> ResolveDetectSettings(double score_threshold,
                                                     int64_t max_detections,
                                                     const v1::DetectionConfig& defaults);

// One Detections per row of `outputs` ([N, C + 4, h, w] over an input of `input_size`), best
// first; box coordinates in original pixels, clipped to the image; label = labels[index] or
// the index.
absl::Status FillDetections(const at::Tensor& outputs, int64_t num_classes, int64_t input_size,
                            const std::vector<InputGeometry>& geometries,
                            const DetectSettings& settings,
                            const std::vector<std::string>& labels,
                            v1::DetectResponse* response);

}  // namespace vitserve
