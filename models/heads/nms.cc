#include "models/heads/nms.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace vitserve {

absl::StatusOr<std::vector<int64_t>> BatchedNms(const at::Tensor& boxes, const at::Tensor& scores,
                                                const at::Tensor& classes, double iou_threshold,
                                                int64_t max_detections) {
  if (!boxes.defined() || boxes.dim() != 2 || boxes.size(1) != 4 ||
      !at::isFloatingType(boxes.scalar_type())) {
    return absl::InvalidArgumentError("BatchedNms: boxes must be a floating [K,4] tensor");
  }
  const int64_t k = boxes.size(0);
  if (!scores.defined() || scores.dim() != 1 || scores.size(0) != k || !classes.defined() ||
      classes.dim() != 1 || classes.size(0) != k || at::isFloatingType(classes.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BatchedNms: scores must be [", k, "] and classes an integer [", k, "] tensor"));
  }
  if (scores.device() != boxes.device() || classes.device() != boxes.device()) {
    return absl::InvalidArgumentError("BatchedNms: boxes, scores and classes on different devices");
  }
  if (!(iou_threshold >= 0.0 && iou_threshold <= 1.0) || max_detections < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BatchedNms: iou_threshold must be in [0,1] and max_detections >= 0, got ",
        iou_threshold, " and ", max_detections));
  }
  std::vector<int64_t> kept;
  if (k == 0 || max_detections == 0) return kept;

  // Order by score (stable: ties keep the lower index first), computed on the CPU so both
  // devices order alike.
  const at::Tensor scores_cpu = scores.to(at::kCPU, at::kFloat).contiguous();
  const float* score = scores_cpu.data_ptr<float>();
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [score](int64_t a, int64_t b) { return score[a] > score[b]; });

  // Which pairs overlap too much, as one [K,K] test on the boxes' device: same class and
  // IoU > threshold. In float32, whatever the input dtype.
  const at::Tensor b = boxes.to(at::kFloat);
  const at::Tensor x1 = b.select(1, 0), y1 = b.select(1, 1), x2 = b.select(1, 2), y2 = b.select(1, 3);
  const at::Tensor area = (x2 - x1).clamp_min(0) * (y2 - y1).clamp_min(0);
  const at::Tensor width =
      (at::minimum(x2.unsqueeze(1), x2.unsqueeze(0)) - at::maximum(x1.unsqueeze(1), x1.unsqueeze(0)))
          .clamp_min(0);
  const at::Tensor height =
      (at::minimum(y2.unsqueeze(1), y2.unsqueeze(0)) - at::maximum(y1.unsqueeze(1), y1.unsqueeze(0)))
          .clamp_min(0);
  const at::Tensor intersection = width * height;
  const at::Tensor union_area = area.unsqueeze(1) + area.unsqueeze(0) - intersection;
  // intersection > threshold * union, so boxes without area (union 0) overlap nothing.
  const at::Tensor suppresses =
      (intersection > union_area * iou_threshold) & (intersection > 0) &
      (classes.unsqueeze(1) == classes.unsqueeze(0));
  const at::Tensor overlap = suppresses.to(at::kCPU).contiguous();
  const bool* overlaps = overlap.data_ptr<bool>();

  // Greedy pass, best first.
  std::vector<char> removed(static_cast<size_t>(k), 0);
  for (int64_t i : order) {
    if (removed[static_cast<size_t>(i)]) continue;
    kept.push_back(i);
    if (static_cast<int64_t>(kept.size()) == max_detections) break;
    const bool* row = overlaps + i * k;
    for (int64_t j = 0; j < k; ++j) {
      if (row[j]) removed[static_cast<size_t>(j)] = 1;
    }
  }
  return kept;
}

}  // namespace vitserve
