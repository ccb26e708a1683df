#include "models/heads/topk.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <numeric>

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
  at::Tensor values;
  try {
    c10::InferenceMode inference_mode;
    values = logits.to(at::kCPU).to(at::kFloat).contiguous();  // No copy for CPU float32.
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("top-k softmax failed: ", e.what()));
  }
  // Plain loops rather than tensor ops: a reply has one row of ~1000 classes, where the
  // dispatcher's overhead and a full sort (this used a stable sort of every row) cost more
  // than the work; on the H200 that sort was 16% of the server's CPU serving raw images.
  const float* row = values.data_ptr<float>();
  const int64_t rows = logits.size(0);
  std::vector<float> probs(static_cast<size_t>(num_classes));
  std::vector<int64_t> order(static_cast<size_t>(num_classes));
  std::vector<std::vector<ClassScore>> result(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r, row += num_classes) {
    const float max = *std::max_element(row, row + num_classes);
    double sum = 0;
    for (int64_t c = 0; c < num_classes; ++c) {
      probs[c] = std::exp(row[c] - max);
      sum += probs[c];
    }
    const float scale = static_cast<float>(1.0 / sum);
    for (float& p : probs) p *= scale;
    std::iota(order.begin(), order.end(), 0);
    // Best first; equal probabilities keep ascending class order.
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&probs](int64_t a, int64_t b) {
                        return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
                      });
    result[r].reserve(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) result[r].push_back(ClassScore{order[j], probs[order[j]]});
  }
  return result;
}

absl::StatusOr<std::vector<std::vector<ClassScore>>> TopKOfOutput(
    const at::Tensor& rows, const ClassifierOutputLayout& layout, int64_t k) {
  if (layout.device_top_k == 0) return TopKSoftmax(rows, k);
  if (!rows.defined() || rows.dim() != 2 || rows.size(1) != layout.columns()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "classifier output rows must have ", layout.columns(), " columns; got ",
        rows.defined() ? c10::str(rows.sizes()) : std::string("an undefined tensor")));
  }
  // More places than the device computed (or an invalid k, which TopKSoftmax reports).
  if (k < 1 || k > layout.device_top_k) {
    return TopKSoftmax(rows.narrow(1, 0, layout.num_classes), k);
  }
  if (!rows.device().is_cpu() || rows.scalar_type() != at::kFloat || rows.stride(1) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "classifier output rows must be CPU float32 [N, ", layout.columns(),
        "] with unit column stride; got ", c10::toString(rows.scalar_type()), " on ",
        rows.device().str()));
  }
  if (k > layout.num_classes) {  // A layout whose device_top_k exceeds its classes.
    return absl::InvalidArgumentError(absl::StrCat(
        "top_k is ", k, "; allowed: 1..", layout.num_classes, " (the model's classes)"));
  }
  std::vector<std::vector<ClassScore>> result(static_cast<size_t>(rows.size(0)));
  const float* row = rows.data_ptr<float>();
  for (std::vector<ClassScore>& scores : result) {
    const float* probabilities = row + layout.num_classes;
    const float* indices = probabilities + layout.device_top_k;
    scores.reserve(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      const float index = indices[j];
      if (!(index >= 0 && index < static_cast<float>(layout.num_classes))) {
        return absl::InternalError(absl::StrCat(
            "the device's top-k place ", j, " names class ", index, " of ", layout.num_classes,
            " (are the model's logits NaN?)"));
      }
      scores.push_back(ClassScore{static_cast<int64_t>(index), probabilities[j]});
    }
    row += rows.stride(0);
  }
  return result;
}

}  // namespace vitserve
