// The FPN decoder shared by the dense heads (segmentation.h, detection.h): per level a 1x1
// lateral conv to `dim` channels, a top-down pathway (each level plus its coarser neighbour
// upsampled), a 3x3 conv + BatchNorm + ReLU per level, every level upsampled to the finest and
// summed, and a 1x1 classifier to `outputs` channels. Parameter names: lateral.i,
// smooth.i.{0,1}, classifier.
// Thread-safety/errors: as torch modules; forward throws c10::Error on mismatched features.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include "models/vision_model.h"

namespace vitserve {

class FpnDecoderImpl : public torch::nn::Module {
 public:
  FpnDecoderImpl(const std::vector<FeatureLevel>& levels, int64_t dim, int64_t outputs);

  // The classifier's output at the finest level's size: [N, outputs, h, w].
  at::Tensor forward(const std::vector<at::Tensor>& features);
  // The summed features before the classifier, [N, dim, h, w]; Classify(Fuse(x)) == forward(x).
  at::Tensor Fuse(const std::vector<at::Tensor>& features);
  at::Tensor Classify(const at::Tensor& fused);

 private:
  torch::nn::ModuleList lateral_{nullptr};
  torch::nn::ModuleList smooth_{nullptr};
  torch::nn::Conv2d classifier_{nullptr};
};
TORCH_MODULE(FpnDecoder);

}  // namespace vitserve
