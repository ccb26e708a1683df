#include "server/runtime/model_instance.h"

#include <exception>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace vitserve {

#ifdef VITSERVE_WITH_CUDA
struct ModelInstance::CudaState {
  c10::cuda::CUDAStream stream;
  // Page-locked staging buffer (flat, float32), grown to the largest batch seen, so H2D copies
  // can be asynchronous. Reuse is safe because Run() returns only after the stream finished.
  at::Tensor pinned;
};
#else
struct ModelInstance::CudaState {};
#endif

namespace {

// Converts what torch throws into a status; `what` says which step failed.
absl::Status TorchErrorToStatus(const std::exception_ptr& error, absl::string_view what) {
  try {
    std::rethrow_exception(error);
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": device out of memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

}  // namespace

ModelInstance::ModelInstance(std::shared_ptr<VisionModel> module, InstanceOptions options)
    : module_(std::move(module)), options_(std::move(options)) {}

ModelInstance::~ModelInstance() = default;

absl::StatusOr<std::unique_ptr<ModelInstance>> ModelInstance::Create(
    std::shared_ptr<VisionModel> module, InstanceOptions options) {
  if (module == nullptr) return absl::InvalidArgumentError("ModelInstance: null module");
  if (options.dtype != at::kFloat && options.dtype != at::kHalf &&
      options.dtype != at::kBFloat16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ModelInstance: dtype ", c10::toString(options.dtype),
        " is not supported; use float32, float16 or bfloat16"));
  }
  if (options.input_size < 0 || options.warmup_iterations < 0) {
    return absl::InvalidArgumentError("ModelInstance: negative input_size or warmup_iterations");
  }
  if (options.device.is_cuda()) {
#ifndef VITSERVE_WITH_CUDA
    return absl::FailedPreconditionError(
        "CUDA device requested but this build of vitserve has no CUDA support");
#endif
  } else if (!options.device.is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ModelInstance: unsupported device ", options.device.str()));
  }
  std::unique_ptr<ModelInstance> instance(
      new ModelInstance(std::move(module), std::move(options)));
  VITSERVE_RETURN_IF_ERROR(instance->Prepare());
  VITSERVE_RETURN_IF_ERROR(instance->WarmUp());
  return instance;
}

absl::Status ModelInstance::Prepare() {
  try {
    torch::NoGradGuard no_grad;
    module_->eval();
    module_->to(options_.device, options_.dtype);
    if (options_.channels_last) {
      for (at::Tensor& p : module_->parameters()) {
        if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
      }
    }
#ifdef VITSERVE_WITH_CUDA
    if (options_.device.is_cuda()) {
      if (options_.cudnn_benchmark) at::globalContext().setBenchmarkCuDNN(true);
      cuda_ = std::make_unique<CudaState>(CudaState{
          c10::cuda::getStreamFromPool(/*isHighPriority=*/false, options_.device.index()),
          at::Tensor()});
    }
#endif
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(),
                              absl::StrCat("preparing the model on ", options_.device.str()));
  }
  return absl::OkStatus();
}

absl::Status ModelInstance::WarmUp() {
  if (options_.input_size <= 0) return absl::OkStatus();
  for (int64_t batch_size : options_.warmup_batch_sizes) {
    if (batch_size < 1) continue;
    const at::Tensor batch =
        at::zeros({batch_size, 3, options_.input_size, options_.input_size}, at::kFloat);
    for (int i = 0; i < options_.warmup_iterations; ++i) {
      absl::StatusOr<at::Tensor> out = Run(batch);
      if (!out.ok()) {
        return absl::Status(out.status().code(),
                            absl::StrCat("warm-up at batch size ", batch_size, " on ",
                                         options_.device.str(), " failed: ",
                                         out.status().message()));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> ModelInstance::Run(const at::Tensor& batch) {
  if (!batch.defined() || batch.dim() != 4 || batch.size(0) < 1 || batch.size(1) != 3 ||
      !batch.device().is_cpu() || batch.scalar_type() != at::kFloat ||
      (options_.input_size > 0 &&
       (batch.size(2) != options_.input_size || batch.size(3) != options_.input_size))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model input must be a CPU float32 [N,3,", options_.input_size, ",",
        options_.input_size, "] tensor with N >= 1; got ",
        batch.defined() ? absl::StrCat(c10::toString(batch.scalar_type()), " ",
                                       batch.device().str(), " ", c10::str(batch.sizes()))
                        : std::string("an undefined tensor")));
  }
  try {
    return RunOrThrow(batch);
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(),
                              absl::StrCat("inference on ", options_.device.str()));
  }
}

at::Tensor ModelInstance::RunOrThrow(const at::Tensor& batch) {
  c10::InferenceMode inference_mode;
  const at::MemoryFormat format =
      options_.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
#ifdef VITSERVE_WITH_CUDA
  if (cuda_ != nullptr) {
    c10::cuda::CUDAStreamGuard stream_guard(cuda_->stream);
    const int64_t numel = batch.numel();
    if (!cuda_->pinned.defined() || cuda_->pinned.numel() < numel) {
      cuda_->pinned = at::empty({numel}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    }
    at::Tensor staged = cuda_->pinned.narrow(0, 0, numel).view(batch.sizes());
    staged.copy_(batch);
    at::Tensor input =
        staged.to(options_.device, at::kFloat, /*non_blocking=*/true, /*copy=*/false);
    input = input.to(options_.dtype).contiguous(format);
    at::Tensor output = module_->forward(input);
    // A blocking D2H copy on the current (instance) stream: waits for the whole batch.
    return output.to(at::kFloat).to(at::kCPU).contiguous();
  }
#endif
  at::Tensor input = batch;
  if (options_.dtype != at::kFloat) input = input.to(options_.dtype);
  input = input.contiguous(format);
  at::Tensor output = module_->forward(input);
  return output.to(at::kFloat).contiguous();
}

}  // namespace vitserve
