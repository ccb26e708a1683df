// Detection post-processing for CenterNet-style outputs (models/dense/detection.h): heat-map
// peaks (a cell whose score is the largest of its 3x3 neighbourhood) above the threshold become
// boxes, then class-aware NMS (nms.h) removes duplicates and the best `max_detections` remain.
//
// Thread-safety: pure function. Errors: INVALID_ARGUMENT for a malformed output tensor or
// arguments out of range.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve {

struct CenterDetection {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;  // Input pixels (continuous, edges at integers).
  float score = 0;                        // Sigmoid of the peak's heat-map logit.
  int64_t class_index = 0;
};

// `output`: one image's [C + 4, h, w] (any floating dtype, any device) over an input of
// `input_size` pixels square; the cell size is input_size / w across and input_size / h down.
// Best score first.
absl::StatusOr<std::vector<CenterDetection>> DecodeCenters(const at::Tensor& output,
                                                           int64_t num_classes,
                                                           int64_t input_size,
                                                           double score_threshold,
                                                           int64_t max_detections,
                                                           double iou_threshold = 0.6);

}  // namespace vitserve
