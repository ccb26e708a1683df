// The interface every zoo backbone implements, and a forward call that reports errors as status.
//
// A VisionModel is a torch::nn::Module whose named_parameters() and named_buffers() equal the
// keys of timm's state_dict() for the same architecture, so checkpoints load by name
// (weights/state_dict.h). Models are created by the ModelRegistry (registry.h) and are normally
// obtained already loaded through LoadModel() (model_loader.h).
// Ownership: held by std::shared_ptr; the server shares one instance between its executor
// threads only if they never mutate it.
// Thread-safety: forward() on a model in eval() mode under c10::InferenceMode does not mutate
// the module and may run concurrently; FuseForInference(), to(), eval() and loading must not
// overlap with anything else.
// Errors: forward() throws c10::Error on bad input (wrong rank, channels, or a size the model
// cannot take); ForwardOrStatus() converts that to INVALID_ARGUMENT (RESOURCE_EXHAUSTED when
// the device ran out of memory).
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace vitserve {

// A spatial feature map that a backbone gives to detection and segmentation heads: its channel
// count and its stride (input pixels per map cell).
struct FeatureLevel {
  int64_t channels = 0;
  int64_t stride = 0;
};

class VisionModel : public torch::nn::Module {
 public:
  // images: [N,3,H,W] normalised, on the module's device and dtype. Returns logits
  // [N,num_classes].
  virtual torch::Tensor forward(torch::Tensor images) = 0;

  // Folds BatchNorm into the neighbouring conv/linear (inference only; idempotent). After this
  // the named parameters no longer match the checkpoint.
  virtual void FuseForInference() {}

  // Backbones with spatial feature maps (which detection and segmentation heads build on)
  // override both: the levels, finest first, and the maps for a batch of images
  // ([N, channels, ceil(H / stride), ceil(W / stride)] per level, the sizes a chain of stride-2
  // convolutions gives). The defaults: no levels, and Features throws c10::Error.
  virtual std::vector<FeatureLevel> FeatureLevels() const { return {}; }
  virtual std::vector<torch::Tensor> Features(const torch::Tensor& images);
};

// Runs model.forward(images), turning a c10::Error (bad shape, dtype or device) into
// INVALID_ARGUMENT with the torch message, so callers above the model layer see only status.
// The caller chooses the grad mode (normally c10::InferenceMode).
absl::StatusOr<torch::Tensor> ForwardOrStatus(VisionModel& model, const torch::Tensor& images);

}  // namespace vitserve
