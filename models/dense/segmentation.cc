#include "models/dense/segmentation.h"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <utility>
#include <vector>

namespace vitserve {
namespace {

namespace nn = torch::nn;

at::Tensor UpsampleTo(const at::Tensor& x, const at::Tensor& like) {
  if (x.size(2) == like.size(2) && x.size(3) == like.size(3)) return x;
  return at::upsample_bilinear2d(x, {like.size(2), like.size(3)}, /*align_corners=*/false);
}

class FpnDecoderImpl : public nn::Module {
 public:
  FpnDecoderImpl(const std::vector<FeatureLevel>& levels, const SegmentationOptions& options) {
    lateral_ = register_module("lateral", nn::ModuleList());
    smooth_ = register_module("smooth", nn::ModuleList());
    for (const FeatureLevel& level : levels) {
      lateral_->push_back(nn::Conv2d(nn::Conv2dOptions(level.channels, options.dim, 1)));
      smooth_->push_back(nn::Sequential(
          nn::Conv2d(nn::Conv2dOptions(options.dim, options.dim, 3).padding(1).bias(false)),
          nn::BatchNorm2d(options.dim), nn::ReLU()));
    }
    classifier_ =
        register_module("classifier", nn::Conv2d(nn::Conv2dOptions(options.dim, options.num_classes, 1)));
  }

  at::Tensor forward(const std::vector<at::Tensor>& features) {
    const size_t n = lateral_->size();
    std::vector<at::Tensor> merged(n);
    for (size_t i = n; i-- > 0;) {
      at::Tensor lateral = lateral_[i]->as<nn::Conv2d>()->forward(features[i]);
      merged[i] = i + 1 < n ? lateral + UpsampleTo(merged[i + 1], lateral) : lateral;
    }
    at::Tensor fused;
    for (size_t i = 0; i < n; ++i) {
      const at::Tensor level =
          UpsampleTo(smooth_[i]->as<nn::Sequential>()->forward(merged[i]), merged[0]);
      fused = fused.defined() ? fused + level : level;
    }
    return classifier_->forward(fused);
  }

 private:
  nn::ModuleList lateral_{nullptr};
  nn::ModuleList smooth_{nullptr};
  nn::Conv2d classifier_{nullptr};
};
TORCH_MODULE(FpnDecoder);

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
    decoder_ = register_module("decode_head", FpnDecoder(levels, options));
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
