#include "server/runtime/model_instance.h"

#include <algorithm>
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
#include <ATen/cuda/CUDAGraph.h>
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
  // Device buffer (flat, float32) that page-locked parts are copied into directly, grown like
  // `pinned`; reuse is safe because work on the instance's stream runs in order.
  at::Tensor device_staging;
  // Captured forward passes, ascending by batch size (empty: eager execution).
  struct Graph {
    int64_t batch_size = 0;
    at::Tensor input;   // Static [batch_size,3,S,S] in the serving dtype and memory format.
    at::Tensor output;  // Static output of the captured forward.
    std::unique_ptr<at::cuda::CUDAGraph> graph;
  };
  std::vector<Graph> graphs;
  std::vector<int64_t> graph_sizes;  // graphs[i].batch_size, for BucketFor.
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

std::vector<int64_t> CudaGraphBatchSizes(int64_t max_batch_size) {
  std::vector<int64_t> sizes;
  for (int64_t b = 1; b < max_batch_size; b *= 2) sizes.push_back(b);
  if (max_batch_size >= 1) sizes.push_back(max_batch_size);
  return sizes;
}

int BucketFor(const std::vector<int64_t>& ascending_sizes, int64_t batch) {
  const auto it = std::lower_bound(ascending_sizes.begin(), ascending_sizes.end(), batch);
  return it == ascending_sizes.end() ? -1 : static_cast<int>(it - ascending_sizes.begin());
}

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
  if (!instance->options_.defer_warm_up) VITSERVE_RETURN_IF_ERROR(instance->WarmUp());
  return instance;
}

absl::Status ModelInstance::WarmUp() {
  VITSERVE_RETURN_IF_ERROR(RunWarmUpBatches());
  return CaptureCudaGraphs();
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
          at::Tensor(), at::Tensor()});
    }
#endif
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(),
                              absl::StrCat("preparing the model on ", options_.device.str()));
  }
  return absl::OkStatus();
}

absl::Status ModelInstance::RunWarmUpBatches() {
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

absl::Status ModelInstance::CaptureCudaGraphs() {
  if (options_.cuda_graph_batch_sizes.empty() || !options_.device.is_cuda()) {
    return absl::OkStatus();
  }
  if (options_.input_size <= 0) {
    return absl::InvalidArgumentError("ModelInstance: CUDA graphs need a fixed input_size");
  }
#ifdef VITSERVE_WITH_CUDA
  std::vector<int64_t> sizes = options_.cuda_graph_batch_sizes;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  const int64_t s = options_.input_size;
  const at::MemoryFormat format =
      options_.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  try {
    c10::InferenceMode inference_mode;
    c10::cuda::CUDAStreamGuard stream_guard(cuda_->stream);
    const at::cuda::MempoolId_t pool = at::cuda::graph_pool_handle();
    // Largest first: the shared pool grows once, and the smaller graphs fit in what it freed.
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      CudaState::Graph graph;
      graph.batch_size = *it;
      // Allocated outside the capture, so no graph's pool memory can alias a static input.
      graph.input = at::zeros({*it, 3, s, s}, at::TensorOptions()
                                                  .device(options_.device)
                                                  .dtype(options_.dtype))
                        .contiguous(format);
      // One eager pass on this stream first: lazily created state (cuBLAS handles and
      // workspaces, per-device copies a model caches) must exist before capture.
      (void)module_->forward(graph.input);
      cuda_->stream.synchronize();
      graph.graph = std::make_unique<at::cuda::CUDAGraph>();
      // Thread-local capture: other threads (other models loading or serving) may keep calling
      // the CUDA API meanwhile.
      graph.graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      graph.output = module_->forward(graph.input);
      graph.graph->capture_end();
      cuda_->graphs.push_back(std::move(graph));
    }
    std::reverse(cuda_->graphs.begin(), cuda_->graphs.end());
    for (const CudaState::Graph& graph : cuda_->graphs) {
      cuda_->graph_sizes.push_back(graph.batch_size);
    }
  } catch (...) {
    cuda_->graphs.clear();
    cuda_->graph_sizes.clear();
    return TorchErrorToStatus(
        std::current_exception(),
        absl::StrCat("capturing CUDA graphs on ", options_.device.str(),
                     " (set cuda_graphs: false in the model config, or pass "
                     "--cuda-graphs=false, to run this model eagerly)"));
  }
#endif
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> ModelInstance::Run(const at::Tensor& batch) {
  return RunParts({batch});
}

absl::StatusOr<at::Tensor> ModelInstance::RunParts(const std::vector<at::Tensor>& parts) {
  int64_t rows = 0;
  for (const at::Tensor& batch : parts) {
    if (!batch.defined() || batch.dim() != 4 || batch.size(0) < 1 || batch.size(1) != 3 ||
        !batch.device().is_cpu() || batch.scalar_type() != at::kFloat ||
        (options_.input_size > 0 &&
         (batch.size(2) != options_.input_size || batch.size(3) != options_.input_size)) ||
        (rows > 0 && batch.sizes().slice(1) != parts.front().sizes().slice(1))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model input must be a CPU float32 [N,3,", options_.input_size, ",",
          options_.input_size, "] tensor with N >= 1; got ",
          batch.defined() ? absl::StrCat(c10::toString(batch.scalar_type()), " ",
                                         batch.device().str(), " ", c10::str(batch.sizes()))
                          : std::string("an undefined tensor")));
    }
    rows += batch.size(0);
  }
  if (parts.empty()) {
    return absl::InvalidArgumentError("model input must have at least one part");
  }
  try {
    return RunOrThrow(parts, rows);
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(),
                              absl::StrCat("inference on ", options_.device.str()));
  }
}

at::Tensor ModelInstance::RunOrThrow(const std::vector<at::Tensor>& parts, int64_t rows) {
  c10::InferenceMode inference_mode;
  const at::MemoryFormat format =
      options_.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  std::vector<int64_t> batch_sizes = parts.front().sizes().vec();
  batch_sizes[0] = rows;
#ifdef VITSERVE_WITH_CUDA
  if (cuda_ != nullptr) {
    c10::cuda::CUDAStreamGuard stream_guard(cuda_->stream);
    const int64_t row_numel = parts.front().numel() / parts.front().size(0);
    const int64_t numel = rows * row_numel;
    const bool all_pinned = std::all_of(parts.begin(), parts.end(), [](const at::Tensor& part) {
      return part.is_contiguous() && part.is_pinned();
    });
    at::Tensor input;
    if (all_pinned) {
      // Page-locked rows (the services write requests there for CUDA models): one asynchronous
      // copy per part into a device buffer, and no host copy at all.
      if (!cuda_->device_staging.defined() || cuda_->device_staging.numel() < numel) {
        cuda_->device_staging = at::empty(
            {numel}, at::TensorOptions().dtype(at::kFloat).device(options_.device));
      }
      int64_t offset = 0;
      for (const at::Tensor& part : parts) {
        cuda_->device_staging.narrow(0, offset, part.numel())
            .view(part.sizes())
            .copy_(part, /*non_blocking=*/true);
        offset += part.numel();
      }
      input = cuda_->device_staging.narrow(0, 0, numel).view(batch_sizes);
    } else {
      if (!cuda_->pinned.defined() || cuda_->pinned.numel() < numel) {
        cuda_->pinned =
            at::empty({numel}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
      }
      // Each part straight into the staging buffer: one host copy per row, no concatenation.
      int64_t offset = 0;
      for (const at::Tensor& part : parts) {
        cuda_->pinned.narrow(0, offset, part.numel()).view(part.sizes()).copy_(part);
        offset += part.numel();
      }
      input = cuda_->pinned.narrow(0, 0, numel)
                  .view(batch_sizes)
                  .to(options_.device, at::kFloat, /*non_blocking=*/true, /*copy=*/false);
    }
    const int bucket = BucketFor(cuda_->graph_sizes, rows);
    if (bucket >= 0) {
      CudaState::Graph& graph = cuda_->graphs[static_cast<size_t>(bucket)];
      graph.input.narrow(0, 0, rows).copy_(input);  // Casts to the serving dtype.
      graph.graph->replay();
      // Copied out before any other replay can reuse the graph pool's memory.
      return graph.output.narrow(0, 0, rows).to(at::kFloat).to(at::kCPU).contiguous();
    }
    input = input.to(options_.dtype).contiguous(format);
    at::Tensor output = module_->forward(input);
    // A blocking D2H copy on the current (instance) stream: waits for the whole batch.
    return output.to(at::kFloat).to(at::kCPU).contiguous();
  }
#endif
  at::Tensor input = parts.size() == 1 ? parts.front() : at::cat(parts, 0);
  if (options_.dtype != at::kFloat) input = input.to(options_.dtype);
  input = input.contiguous(format);
  at::Tensor output = module_->forward(input);
  return output.to(at::kFloat).contiguous();
}

}  // namespace vitserve
