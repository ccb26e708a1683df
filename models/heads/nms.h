// Detection post-processing: batched, class-aware non-maximum suppression.
//
// Boxes of different classes never suppress each other; within a class, a box is dropped when
// it overlaps (intersection over union > iou_threshold) a higher-scoring box that was kept.
// The overlap test runs as tensor ops on the boxes' device (CPU or CUDA: one [K,K] comparison),
// and the greedy pass over it on the CPU, so both devices keep exactly the same boxes.
//
// Thread-safety: pure function. Errors: INVALID_ARGUMENT for mismatched or malformed inputs
// (boxes not [K,4], scores/classes not [K], iou_threshold outside [0,1], max_detections < 0).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve {

// Indices into the inputs of the boxes kept, best score first (ties: lower index first), at
// most `max_detections` of them. boxes: [K,4] (x1, y1, x2, y2; any floating dtype), scores: [K],
// classes: [K] integer; all on one device. A box with x2 <= x1 or y2 <= y1 has no area: it is
// kept or dropped by score like any other but overlaps nothing.
absl::StatusOr<std::vector<int64_t>> BatchedNms(const at::Tensor& boxes, const at::Tensor& scores,
                                                const at::Tensor& classes, double iou_threshold,
                                                int64_t max_detections);

}  // namespace vitserve
