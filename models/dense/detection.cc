#include "models/dense/detection.h"

#include <c10/core/GradMode.h>
#include <torch/nn/modules/conv.h>

#include <cmath>
#include <utility>
#include <vector>

#include "models/dense/fpn.h"

namespace vitserve {
namespace {

class DetectionModel final : public VisionModel {
 public:
  DetectionModel(std::shared_ptr<VisionModel> backbone, const DetectionOptions& options)
      : levels_(options.levels) {
    TORCH_CHECK(backbone != nullptr, "detection model without a backbone");
    std::vector<FeatureLevel> levels = backbone->FeatureLevels();
    TORCH_CHECK(options.levels >= 1 && static_cast<int64_t>(levels.size()) >= options.levels,
                "the backbone has ", levels.size(), " feature levels; the detector wants ",
                options.levels);
    TORCH_CHECK(options.num_classes >= 1 && options.dim >= 1, "bad detection options");
    levels.resize(static_cast<size_t>(options.levels));
    backbone_ = register_module("backbone", std::move(backbone));
    decoder_ = register_module("decode_head",
                               FpnDecoder(levels, options.dim, options.num_classes));
    box_ = register_module("box_head",
                           torch::nn::Conv2d(torch::nn::Conv2dOptions(options.dim, 4, 1)));
    // Heat maps start near a 10% prior (CenterNet's focal-loss initialisation), boxes near
    // 16 pixels: training starts from sensible outputs rather than from 50% everywhere.
    c10::NoGradGuard no_grad;
    for (auto& item : decoder_->named_parameters()) {
      if (item.key() == "classifier.bias") item.value().fill_(-std::log((1 - 0.1) / 0.1));
    }
    box_->bias.zero_();
    box_->bias.narrow(0, 0, 2).fill_(std::log(16.0));
  }

  torch::Tensor forward(torch::Tensor images) override {
    std::vector<at::Tensor> features = backbone_->Features(images);
    features.resize(static_cast<size_t>(levels_));
    const at::Tensor fused = decoder_->Fuse(features);
    return at::cat({decoder_->Classify(fused), box_->forward(fused)}, 1);
  }

  void FuseForInference() override { backbone_->FuseForInference(); }

 private:
  const int64_t levels_;
  std::shared_ptr<VisionModel> backbone_;
  FpnDecoder decoder_{nullptr};
  torch::nn::Conv2d box_{nullptr};
};

}  // namespace

std::shared_ptr<VisionModel> MakeDetectionModel(std::shared_ptr<VisionModel> backbone,
                                                const DetectionOptions& options) {
  return std::make_shared<DetectionModel>(std::move(backbone), options);
}

}  // namespace vitserve
