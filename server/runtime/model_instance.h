// ModelInstance: one replica of a model on one device, driven by exactly one executor thread.
//
// Create() takes a freshly loaded module and prepares it for serving: eval(), moved to the
// device and dtype, optionally channels-last, then warmed up. Run() executes one batch:
// CPU float32 [N,3,S,S] in, CPU float32 output ([N,num_classes] for classifiers) out.
// On CUDA, the batch is staged through a reused pinned host buffer and copied asynchronously on
// the instance's own CUDA stream (from the pool), cast to the serving dtype on the device,
// computed, and the result copied back (which synchronises that stream).
//
// Ownership: the instance owns its module exclusively. A VisionModel is not Cloneable, so each
// replica must come from its own LoadModel() call (the model manager does this); never give two
// instances the same module.
// Thread-safety: NOT thread-safe. Create/Run/destruction must not overlap; the intended user is
// the single DynamicBatcher executor thread bound to this instance.
// Errors: Create: INVALID_ARGUMENT (null module, bad options, dtype not floating point), the
// device errors of a failed move (INTERNAL / RESOURCE_EXHAUSTED), and warm-up failures.
// Run: INVALID_ARGUMENT (batch not CPU float32 [N,3,S,S] with S = input_size), RESOURCE_EXHAUSTED
// (device out of memory), INTERNAL (any other torch error: a bug, since inputs are validated).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "models/vision_model.h"

namespace vitserve {

struct InstanceOptions {
  c10::Device device = c10::Device(c10::kCPU);
  // Serving dtype: kFloat, kHalf or kBFloat16. Inputs arrive and outputs leave as float32.
  at::ScalarType dtype = at::kFloat;
  // Convert 4-D weights and inputs to channels-last (NHWC); helps conv models on CUDA tensor
  // cores, neutral or worse for pure transformers.
  bool channels_last = false;
  // Warm-up batch sizes (each run warmup_iterations times at Create); empty: no warm-up.
  std::vector<int64_t> warmup_batch_sizes;
  int warmup_iterations = 1;
  // Spatial size S of the [N,3,S,S] input; 0 skips the spatial check (and warm-up).
  int64_t input_size = 0;
  // cuDNN autotuning (a process-wide torch setting, set only when true and on CUDA). Off by
  // default: measured on an H100 (shvit_s1, fp16, dynamic batches of 1..4 rows), autotuning kept
  // re-running after warm-up and made serving 3x slower than without it.
  bool cudnn_benchmark = false;
};

class ModelInstance {
 public:
  static absl::StatusOr<std::unique_ptr<ModelInstance>> Create(
      std::shared_ptr<VisionModel> module, InstanceOptions options);

  ModelInstance(const ModelInstance&) = delete;
  ModelInstance& operator=(const ModelInstance&) = delete;
  ~ModelInstance();

  // Runs one batch (see the file comment). Not thread-safe.
  absl::StatusOr<at::Tensor> Run(const at::Tensor& batch);

  const InstanceOptions& options() const { return options_; }

 private:
  struct CudaState;  // Stream and pinned buffer; defined only in CUDA builds.

  ModelInstance(std::shared_ptr<VisionModel> module, InstanceOptions options);
  absl::Status Prepare();
  absl::Status WarmUp();
  at::Tensor RunOrThrow(const at::Tensor& batch);

  std::shared_ptr<VisionModel> module_;
  const InstanceOptions options_;
  std::unique_ptr<CudaState> cuda_;
};

}  // namespace vitserve
