#include "tests/test_util/test_models.h"

#include <ATen/ATen.h>
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
}

ModelRegistry RegistryWithTestModels(ComputeGate* gate) {
  ModelRegistry registry = BuiltinModelRegistry();
  RegisterTestModels(registry, gate);
  return registry;
}

}  // namespace vitserve
