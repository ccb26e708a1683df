#include "models/heads/topk.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <exception>

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::StatusOr<std::vector<std::vector<ClassScore>>> TopKSoftmax(const at::Tensor& logits,
                                                                 int64_t k) {
  if (!logits.defined() || logits.dim() != 2 || logits.size(1) < 1 ||
      !at::isFloatingType(logits.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits must be a floating-point [N,C] tensor with C >= 1; got ",
        logits.defined()
            ? absl::StrCat(c10::toString(logits.scalar_type()), " ", c10::str(logits.sizes()))
            : std::string("an undefined tensor")));
  }
  const int64_t num_classes = logits.size(1);
  if (k < 1 || k > num_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", k, "; allowed: 1..", num_classes, " (the model's classes)"));
  }
  std::vector<std::vector<ClassScore>> result;
  try {
    c10::InferenceMode inference_mode;
    const at::Tensor probs = logits.to(at::kCPU).to(at::kFloat).softmax(/*dim=*/1).contiguous();
    // sort(stable) rather than topk so that equal scores keep ascending class order.
    const auto [sorted, indices] = probs.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
    const at::Tensor top_scores = sorted.narrow(1, 0, k).contiguous();
    const at::Tensor top_indices = indices.narrow(1, 0, k).contiguous();
    const float* score = top_scores.data_ptr<float>();
    const int64_t* index = top_indices.data_ptr<int64_t>();
    const int64_t rows = logits.size(0);
    result.resize(rows);
    for (int64_t r = 0; r < rows; ++r) {
      result[r].reserve(k);
      for (int64_t j = 0; j < k; ++j) {
        result[r].push_back(ClassScore{index[r * k + j], score[r * k + j]});
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("top-k softmax failed: ", e.what()));
  }
  return result;
}

}  // namespace vitserve
