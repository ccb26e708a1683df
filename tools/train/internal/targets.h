// What vitserve-train feeds a model and scores it against, exposed for its unit tests: a batch
// of generated scenes with their ground truth at the model's input, and the detection loss.
// Thread-safety: pure functions. Errors: as GenerateScene and PreprocessWhole.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"
#include "models/model_info.h"
#include "server/image/preprocess.h"

namespace vitserve::train::internal {

// Detection's output stride: SHViT's finest feature level, where the detector reads out.
inline constexpr int64_t kDetectionStride = 4;

struct Batch {
  at::Tensor input;  // [B,3,S,S] float32, normalised.
  // Segmentation: [B,S,S] int64 class indices. Classification: [B] int64, the shape's class
  // (0 = circle, as detection's classes).
  at::Tensor target;
  // Detection (CenterNet targets at the output cells, h = w = S / 4): per-class centre heat
  // maps [B,C,h,w] (a Gaussian around each object's cell, 1 at the cell), log box size in input
  // pixels [B,2,h,w], the centre inside its cell [B,2,h,w], and where objects are centred
  // [B,h,w] (1 there, 0 elsewhere).
  at::Tensor heat, log_size, offset, centres;
  // Detection: the objects' boxes in input pixels (x1, y1, x2, y2) and classes, per scene.
  std::vector<std::vector<std::pair<std::array<float, 4>, int64_t>>> boxes;
};

// Scenes first_index .. first_index + count - 1 of `seed`, as Detect and Segment feed them to a
// model, with their ground truth brought to the input alike: label maps stretched (nearest:
// labels are not averaged), boxes scaled. Classification: one shape of each scene (the scene's
// index picks which), cut out with ClassificationCrop and preprocessed as Classify does (timm's
// resize and centre crop), labelled with its class.

// The rows are made on `threads` threads (this one included).
absl::StatusOr<Batch> MakeBatch(ModelTask task, uint64_t seed, int64_t first_index, int64_t count,
                                const PreprocessSpec& spec, int threads = 1);

// A single-shape crop of `box` from a `width` x `height` image: the box grown by a quarter of its
// longer side on every side, squared around its centre, and clipped to the image, so the shape
// stays whole inside Classify's centre crop (crop_pct 0.875 and up).
cv::Rect ClassificationCrop(const cv::Rect2f& box, int width, int height);

// CenterNet's loss: the penalty-reduced focal loss on the heat maps (normalised by the number of
// objects), L1 on the log sizes and the in-cell offsets at the object centres.
at::Tensor DetectionLoss(const at::Tensor& output, const Batch& batch, const c10::Device& device);

}  // namespace vitserve::train::internal
