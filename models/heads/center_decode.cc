#include "models/heads/center_decode.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "models/heads/nms.h"

namespace vitserve {

absl::StatusOr<std::vector<CenterDetection>> DecodeCenters(const at::Tensor& output,
                                                           int64_t num_classes,
                                                           int64_t input_size,
                                                           double score_threshold,
                                                           int64_t max_detections,
                                                           double iou_threshold) {
  if (!output.defined() || output.dim() != 3 || num_classes < 1 ||
      output.size(0) != num_classes + 4 || output.size(1) < 1 || output.size(2) < 1 ||
      !at::isFloatingType(output.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "detection output must be a floating [", num_classes + 4, ", h, w] tensor, got ",
        output.defined() ? c10::str(output.sizes()) : std::string("nothing")));
  }
  if (input_size < 1 || !(score_threshold >= 0 && score_threshold <= 1) || max_detections < 0) {
    return absl::InvalidArgumentError(
        "DecodeCenters: input_size >= 1, score_threshold in [0,1] and max_detections >= 0");
  }
  std::vector<CenterDetection> detections;
  if (max_detections == 0) return detections;
  const at::Tensor out = output.to(at::kFloat);
  const int64_t h = out.size(1), w = out.size(2);
  const at::Tensor heat = out.narrow(0, 0, num_classes).sigmoid();
  // Peaks: equal to the maximum of their 3x3 neighbourhood.
  const at::Tensor pooled = at::max_pool2d(heat.unsqueeze(0), {3, 3}, {1, 1}, {1, 1}).squeeze(0);
  const at::Tensor candidate = (heat == pooled) & (heat >= score_threshold);
  const at::Tensor index = candidate.flatten().nonzero().squeeze(1);  // Into [C * h * w].
  if (index.numel() == 0) return detections;
  // At most a few times what is wanted, best first, go through NMS.
  const int64_t keep = std::min<int64_t>(index.numel(), std::max<int64_t>(4 * max_detections, 100));
  const at::Tensor scores_all = heat.flatten().index_select(0, index);
  const auto [top_scores, order] = scores_all.topk(keep);
  const at::Tensor chosen = index.index_select(0, order);
  const at::Tensor classes = chosen.div(h * w, "floor");
  const at::Tensor cell = chosen.remainder(h * w);
  const at::Tensor ys = cell.div(w, "floor");
  const at::Tensor xs = cell.remainder(w);
  const at::Tensor box = out.narrow(0, num_classes, 4).flatten(1).index_select(1, cell);  // [4, K]
  const double cell_w = static_cast<double>(input_size) / w;
  const double cell_h = static_cast<double>(input_size) / h;
  const at::Tensor cx = (xs.to(at::kFloat) + box[2].sigmoid()) * cell_w;
  const at::Tensor cy = (ys.to(at::kFloat) + box[3].sigmoid()) * cell_h;
  const at::Tensor half_w = box[0].clamp_max(20).exp() * 0.5;  // clamp: no inf for a wild logit
  const at::Tensor half_h = box[1].clamp_max(20).exp() * 0.5;
  const at::Tensor boxes = at::stack({cx - half_w, cy - half_h, cx + half_w, cy + half_h}, 1);
  VITSERVE_ASSIGN_OR_RETURN(std::vector<int64_t> kept,
                            BatchedNms(boxes, top_scores, classes, iou_threshold, max_detections));
  const at::Tensor boxes_cpu = boxes.cpu().contiguous();
  const at::Tensor scores_cpu = top_scores.cpu().contiguous();
  const at::Tensor classes_cpu = classes.cpu().contiguous();
  const float* b = boxes_cpu.data_ptr<float>();
  for (int64_t i : kept) {
    detections.push_back(CenterDetection{b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3],
                                         scores_cpu.data_ptr<float>()[i],
                                         classes_cpu.data_ptr<int64_t>()[i]});
  }
  return detections;
}

}  // namespace vitserve
