#include "models/dense/segmentation.h"

#include <utility>
#include <vector>

#include "models/dense/fpn.h"

namespace vitserve {
namespace {

class SegmentationModel final : public VisionModel {
 public:
  SegmentationModel(std::shared_ptr<VisionModel> backbone, const SegmentationOptions& options)
      : levels_(options.levels) {
    TORCH_CHECK(backbone != nullptr, "segmentation model without a backbone");
    std::vector<FeatureLevel> levels = backbone->FeatureLevels();
    TORCH_CHECK(options.levels >= 1 && static_cast<int64_t>(levels.size()) >= options.levels,
                "the backbone has ", levels.size(), " feature levels; the decoder wants ",
                options.levels);
    TORCH_CHECK(options.num_classes >= 1 && options.dim >= 1, "bad segmentation options");
    levels.resize(static_cast<size_t>(options.levels));
    backbone_ = register_module("backbone", std::move(backbone));
    decoder_ = register_module("decode_head",
                               FpnDecoder(levels, options.dim, options.num_classes));
  }

  // [N, classes, ceil(H / 4), ceil(W / 4)] for SHViT: the finest used level's stride.
  torch::Tensor forward(torch::Tensor images) override {
    std::vector<at::Tensor> features = backbone_->Features(images);
    features.resize(static_cast<size_t>(levels_));
    return decoder_->forward(features);
  }

  void FuseForInference() override { backbone_->FuseForInference(); }

 private:
  const int64_t levels_;
  std::shared_ptr<VisionModel> backbone_;
  FpnDecoder decoder_{nullptr};
};

}  // namespace

std::shared_ptr<VisionModel> MakeSegmentationModel(std::shared_ptr<VisionModel> backbone,
                                                   const SegmentationOptions& options) {
  return std::make_shared<SegmentationModel>(std::move(backbone), options);
}

}  // namespace vitserve
