// Classification post-processing: softmax over class logits and the k best classes per row.
//
// Thread-safety: pure function. Errors: INVALID_ARGUMENT when logits are not a defined 2-D
// [N,C] tensor with C >= 1, or when k is outside [1, C].
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve {

struct ClassScore {
  int64_t index = 0;  // Class index in [0, C).
  float score = 0;    // Softmax probability.
};

// For each row of `logits` ([N,C], any floating dtype/device; computed in float32 on CPU), the k
// classes with the highest softmax probability, best first (ties: lower index first).
absl::StatusOr<std::vector<std::vector<ClassScore>>> TopKSoftmax(const at::Tensor& logits,
                                                                 int64_t k);

// The columns of a classifier's output rows as the server's model instances return them. With
// device_top_k = 0 a row is the num_classes logits. With device_top_k = d > 0 (the instance
// computed the softmax top-d on its GPU: InstanceOptions::device_top_k) a row has
// num_classes + 2d float32 columns: the logits, then the d best probabilities as TopKSoftmax
// ranks them, then their class indices (as floats, exact).
struct ClassifierOutputLayout {
  int64_t num_classes = 0;
  int64_t device_top_k = 0;

  int64_t columns() const { return num_classes + 2 * device_top_k; }
};

// TopKSoftmax of output rows of `layout`: read from the device's columns when k <= its
// device_top_k (no softmax on the host), otherwise computed from the logits. Errors as
// TopKSoftmax's (k outside 1..num_classes: INVALID_ARGUMENT); rows that are not a CPU float32
// [N, layout.columns()] tensor: INVALID_ARGUMENT; a device column that names no class (NaN
// logits): INTERNAL.
absl::StatusOr<std::vector<std::vector<ClassScore>>> TopKOfOutput(
    const at::Tensor& rows, const ClassifierOutputLayout& layout, int64_t k);

}  // namespace vitserve
