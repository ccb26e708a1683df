// Strict loading of a safetensors checkpoint into a torch::nn::Module by tensor name.
//
// The module's named_parameters() and named_buffers() must match the file's tensors one to one,
// by name and shape (PyTorch's load_state_dict(strict=True)). BatchNorm's `num_batches_tracked`
// counter is ignored on both sides: timm's state_dict holds it, converted checkpoints may not,
// and inference never reads it. Values are converted to each parameter's dtype and device.
// Nothing is copied unless the whole file matches, so a failed load leaves the module as it was.
// Ownership: borrows both arguments for the call. Thread-safety: the module must not be used
// concurrently while loading. Errors: INVALID_ARGUMENT listing every missing, unexpected and
// mis-shaped tensor (with shapes), with a hint when the file looks like another architecture;
// INTERNAL if torch fails while copying.
#pragma once

#include <torch/nn/module.h>

#include "absl/status/status.h"
#include "models/weights/safetensors.h"

namespace vitserve {

absl::Status LoadStateDict(torch::nn::Module& module, const SafetensorsFile& file);

// Every parameter and buffer of `module` by its state-dict name, without `num_batches_tracked`
// counters: the tensors a checkpoint for it must hold.
std::map<std::string, at::Tensor> StateDictTensors(const torch::nn::Module& module);

}  // namespace vitserve
