#include "tests/test_util/test_models.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vitserve {

void ComputeGate::Hold() {
  absl::MutexLock lock(&mu_);
  held_ = true;
}

void ComputeGate::Release() {
  absl::MutexLock lock(&mu_);
  held_ = false;
}

void ComputeGate::ResetCounts() {
  absl::MutexLock lock(&mu_);
  batch_sizes_.clear();
}

bool ComputeGate::WaitForBatches(int64_t batches, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto entered = [this, batches]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int64_t>(batch_sizes_.size()) >= batches;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&entered), timeout);
}

int64_t ComputeGate::BatchesEntered() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(batch_sizes_.size());
}

std::vector<int64_t> ComputeGate::BatchSizes() const {
  absl::MutexLock lock(&mu_);
  return batch_sizes_;
}

void ComputeGate::Enter(int64_t rows) {
  absl::MutexLock lock(&mu_);
  batch_sizes_.push_back(rows);
  auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !held_; };
  mu_.Await(absl::Condition(&released));
  TORCH_CHECK_WITH(OutOfMemoryError, max_rows_ < 0 || rows <= max_rows_, "test gate: ", rows,
                   " rows do not fit the memory budget of ", max_rows_, " rows");
}

void ComputeGate::SetMemoryBudget(int64_t max_rows) {
  absl::MutexLock lock(&mu_);
  max_rows_ = max_rows;
}

namespace {

// logits = head(flatten(images)); head's weights are set by SetFixedWeights.
class ProbeModel : public VisionModel {
 public:
  explicit ProbeModel(ComputeGate* gate)
      : gate_(gate),
        head_(register_module(
            "head", torch::nn::Linear(3 * kTestModelInputSize * kTestModelInputSize,
                                      kTestModelClasses))) {
    SetFixedWeights();
  }

  torch::Tensor forward(torch::Tensor images) override {
    if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != kTestModelInputSize ||
        images.size(3) != kTestModelInputSize) {
      throw std::invalid_argument(absl::StrCat("test model wants [N,3,32,32], got ",
                                               images.dim(), " dims"));
    }
    if (gate_ != nullptr) gate_->Enter(images.size(0));
    return head_->forward(images.flatten(1));
  }

 private:
  // W[c][j] = 3 sin(0.61 j (c+1) + c) / sqrt(D / 3): every class weighs every input element
  // differently, and typical logits are O(1), so softmax outputs differ clearly between images.
  void SetFixedWeights() {
    at::NoGradGuard no_grad;
    const int64_t inputs = head_->weight.size(1);
    at::Tensor j = at::arange(inputs, at::kDouble).unsqueeze(0);
    at::Tensor c = at::arange(kTestModelClasses, at::kDouble).unsqueeze(1);
    at::Tensor weight = (0.61 * j * (c + 1) + c).sin() * (3.0 / std::sqrt(inputs / 3.0));
    head_->weight.copy_(weight.to(at::kFloat));
    head_->bias.zero_();
  }

  ComputeGate* gate_;  // Null for kProbeModel.
  torch::nn::Linear head_;
};

class SegmentationProbe : public VisionModel {
 public:
  torch::Tensor forward(torch::Tensor images) override {
    if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != kTestModelInputSize ||
        images.size(3) != kTestModelInputSize) {
      throw std::invalid_argument("segmentation probe wants [N,3,32,32]");
    }
    const at::Tensor brightness = at::avg_pool2d(images.mean(1, /*keepdim=*/true), {4, 4});
    return at::cat({0.5 - brightness.abs(), -brightness, brightness}, 1);
  }
};

class DetectionProbe : public VisionModel {
 public:
  torch::Tensor forward(torch::Tensor images) override {
    if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != kTestModelInputSize ||
        images.size(3) != kTestModelInputSize) {
      throw std::invalid_argument("detection probe wants [N,3,32,32]");
    }
    const int64_t n = images.size(0), s = kTestModelInputSize, cells = s / 4;
    const at::Tensor brightness = images.mean(1);  // [N, S, S], normalised (white 2, black -2)
    const at::Tensor bright = brightness > 1.0;
    const at::Tensor dark = brightness < -1.0;
    const at::Tensor has_bright = bright.flatten(1).any(1);
    // The blob: the bright pixels, or the dark ones where nothing is bright.
    const at::Tensor blob = at::where(has_bright.view({n, 1, 1}), bright, dark).to(at::kFloat);
    const at::Tensor count = blob.sum({1, 2}).clamp_min(1);
    const at::Tensor centres = at::arange(s, at::kFloat) + 0.5;  // Pixel centres.
    const at::Tensor cx = (blob * centres.view({1, 1, s})).sum({1, 2}) / count;
    const at::Tensor cy = (blob * centres.view({1, s, 1})).sum({1, 2}) / count;
    const at::Tensor columns = blob.amax(1);  // [N, S]: columns holding blob pixels
    const at::Tensor rows = blob.amax(2);
    const at::Tensor width = columns.sum(1).clamp_min(1);
    const at::Tensor height = rows.sum(1).clamp_min(1);
    const at::Tensor present = blob.flatten(1).any(1);
    // Heat: high at the cell nearest the centroid, falling with distance; nothing without a blob.
    const at::Tensor cell_centres = (at::arange(cells, at::kFloat) + 0.5) * 4;
    const at::Tensor dx = cell_centres.view({1, 1, cells}) - cx.view({n, 1, 1});
    const at::Tensor dy = cell_centres.view({1, cells, 1}) - cy.view({n, 1, 1});
    at::Tensor heat = 8.0 - (dx * dx + dy * dy).sqrt() * 2.0;  // [N, cells, cells]
    heat = at::where(present.view({n, 1, 1}), heat, at::full_like(heat, -20.0));
    const at::Tensor bright_heat = at::where(has_bright.view({n, 1, 1}), heat, at::full_like(heat, -20.0));
    const at::Tensor dark_heat = at::where(has_bright.view({n, 1, 1}), at::full_like(heat, -20.0), heat);
    auto logit = [](const at::Tensor& p) { return (p / (1 - p)).log(); };
    const at::Tensor grid = at::arange(cells, at::kFloat);
    const at::Tensor offset_x = logit((cx.view({n, 1, 1}) / 4 - grid.view({1, 1, cells}))
                                          .clamp(0.001, 0.999)
                                          .expand({n, cells, cells}));
    const at::Tensor offset_y = logit((cy.view({n, 1, 1}) / 4 - grid.view({1, cells, 1}))
                                          .clamp(0.001, 0.999)
                                          .expand({n, cells, cells}));
    const at::Tensor log_w = width.log().view({n, 1, 1}).expand({n, cells, cells});
    const at::Tensor log_h = height.log().view({n, 1, 1}).expand({n, cells, cells});
    return at::stack({bright_heat, dark_heat, log_w, log_h, offset_x, offset_y}, 1);
  }
};

ModelInfo TestModelInfo(const char* name) {
  ModelInfo info;
  info.architecture = name;
  info.family = "test";
  info.input_size = kTestModelInputSize;
  info.mean = {0.5f, 0.5f, 0.5f};
  info.std = {0.25f, 0.25f, 0.25f};
  info.crop_pct = 1.0;
  info.interpolation = "bilinear";
  info.num_classes = kTestModelClasses;
  return info;
}

}  // namespace

void RegisterTestModels(ModelRegistry& registry, ComputeGate* gate) {
  auto check = [](absl::Status status) {
    if (!status.ok()) throw std::logic_error(std::string(status.message()));
  };
  check(registry.Register(TestModelInfo(kProbeModel), [](const ModelInfo&) {
    return std::make_shared<ProbeModel>(nullptr);
  }));
  check(registry.Register(TestModelInfo(kGatedModel), [gate](const ModelInfo&) {
    return std::make_shared<ProbeModel>(gate);
  }));
  ModelInfo segmentation = TestModelInfo(kSegmentationProbe);
  segmentation.task = ModelTask::kSegmentation;
  segmentation.tasks = {ModelTask::kSegmentation};
  segmentation.num_classes = kSegmentationProbeClasses;
  check(registry.Register(segmentation, [](const ModelInfo&) {
    return std::make_shared<SegmentationProbe>();
  }));
  ModelInfo detection = TestModelInfo(kDetectionProbe);
  detection.task = ModelTask::kDetection;
  detection.tasks = {ModelTask::kDetection};
  detection.num_classes = kDetectionProbeClasses;
  check(registry.Register(detection, [](const ModelInfo&) {
    return std::make_shared<DetectionProbe>();
  }));
}

ModelRegistry RegistryWithTestModels(ComputeGate* gate) {
  ModelRegistry registry = BuiltinModelRegistry();
  RegisterTestModels(registry, gate);
  return registry;
}

}  // namespace vitserve
