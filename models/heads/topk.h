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

}  // namespace vitserve
