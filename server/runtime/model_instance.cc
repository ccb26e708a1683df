#include "server/runtime/model_instance.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/accumulate.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "server/image/decode.h"
#include "server/image/jpeg_part.h"
#include "server/log.h"

#ifdef VITSERVE_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/cuda/CachingHostAllocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "server/runtime/internal/top_k_kernel.h"
#endif

namespace vitserve {

#ifdef VITSERVE_WITH_CUDA
struct ModelInstance::CudaState {
  c10::cuda::CUDAStream stream;
  // Device buffer (flat, float32) that float parts are copied into, grown to the largest batch
  // seen. Shared by the batches in flight: safe because all work on it, and its reallocation
  // (the caching allocator reuses a freed block only on the stream it came from), follows the
  // instance's stream order.
  at::Tensor device_staging;
  // Device buffer (flat, uint8) for image parts, grown and reused like `device_staging`.
  at::Tensor device_bytes;
  // Captured forward passes, ascending by batch size (empty: eager execution).
  struct Graph {
    int64_t batch_size = 0;
    at::Tensor input;   // Static [batch_size,3,S,S] in the serving dtype and memory format.
    at::Tensor output;  // Static output of the captured forward.
    std::unique_ptr<at::cuda::CUDAGraph> graph;
  };
  std::vector<Graph> graphs;
  std::vector<int64_t> graph_sizes;  // graphs[i].batch_size, for BucketFor.
  // Resources of finished batches, for the next ones (a batch in flight holds its own).
  std::vector<std::unique_ptr<BatchResources>> idle_resources;
  int batches_in_flight = 0;  // Launched and not yet finished.
  // False once cudaMemcpyBatchAsync has failed (a driver older than CUDA 12.8's): copies are
  // then issued one call each.
  bool batched_copies = true;
};

// What one batch in flight uses until its work is done, so that two batches can be in flight.
struct ModelInstance::BatchResources {
  // Timing events (BatchStages).
  at::cuda::CUDAEvent input_start{cudaEventDefault};
  at::cuda::CUDAEvent forward_start{cudaEventDefault};  // The input is ready.
  at::cuda::CUDAEvent forward_end{cudaEventDefault};
  // After the output copy: Finish waits for one of these, spinning for a batch of fewer than
  // kSleepingWaitRows rows (a lone request's latency), asleep for a larger one.
  at::cuda::CUDAEvent output_done_spinning{cudaEventDefault};
  at::cuda::CUDAEvent output_done_sleeping{cudaEventBlockingSync};
  // Page-locked staging (flat, float32) for float parts that are not page-locked themselves,
  // grown to the largest batch seen, so their copies to the device can be asynchronous.
  at::Tensor pinned;

  at::cuda::CUDAEvent& done(bool sleeping) {
    return sleeping ? output_done_sleeping : output_done_spinning;
  }
};

namespace {

// Host-to-device copies of one batch, gathered so that they are issued with one driver call.
struct HostToDeviceCopies {
  std::vector<void*> destinations;
  std::vector<const void*> sources;
  std::vector<size_t> sizes;

  void Reserve(size_t count) {
    destinations.reserve(count);
    sources.reserve(count);
    sizes.reserve(count);
  }
  void Add(void* destination, const void* source, size_t bytes) {
    destinations.push_back(destination);
    sources.push_back(source);
    sizes.push_back(bytes);
  }
};

// Issues `copies` (page-locked sources, device destinations, none overlapping) on `stream`,
// in stream order. A batch has a part per request, and one cudaMemcpyAsync per part costs the
// executor several microseconds of driver time each while the copy engine waits for the next;
// cudaMemcpyBatchAsync takes them in one call (deit_tiny at 1024 clients, docs/performance.md
// run 24: the input stage 6.8 us per image instead of 10.0 in run 23). Where it fails (a driver
// without it), `*batched` is cleared and every later batch uses one call per copy.
void IssueHostToDeviceCopies(const HostToDeviceCopies& copies, cudaStream_t stream,
                             bool* batched) {
  const size_t count = copies.sizes.size();
  if (count == 0) return;
#if CUDART_VERSION >= 12080
  if (*batched && count > 1) {
    cudaMemcpyAttributes attributes = {};
    // Stream order: the sources are request buffers no earlier work on the stream touches,
    // but they must be read after what the stream already holds (the previous batch).
    attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    size_t first_copy = 0;  // attributes applies to every copy.
    const cudaError_t issued = cudaMemcpyBatchAsync(
        copies.destinations.data(), copies.sources.data(), copies.sizes.data(), count,
        &attributes, &first_copy, 1, stream);
    if (issued == cudaSuccess) return;
    (void)cudaGetLastError();  // Clears the error; the copies go one by one below.
    *batched = false;
    LogWarning(absl::StrCat("cudaMemcpyBatchAsync failed (", cudaGetErrorString(issued),
                            "); issuing each request's copy to the GPU separately"));
  }
#else
  *batched = false;
#endif
  for (size_t i = 0; i < count; ++i) {
    C10_CUDA_CHECK(cudaMemcpyAsync(copies.destinations[i], copies.sources[i], copies.sizes[i],
                                   cudaMemcpyHostToDevice, stream));
  }
}

// Batches of at least this many rows wait for the GPU asleep (an event with
// cudaEventBlockingSync); smaller ones spin. A spinning executor answers a lone request a few
// microseconds sooner, but at high load it held a core for every millisecond of a batch's
// forward pass (a blocking device-to-host copy into pageable memory spins in the driver: 8% of
// the server's CPU samples at 1024 clients in run 24), cores that gRPC's threads needed. At 16
// rows deit_tiny's forward pass already takes a few hundred microseconds.
constexpr int64_t kSleepingWaitRows = 16;

// Whether `part` is contiguous memory from torch's page-locked host allocator (what
// at::empty(..., pinned_memory(true)) returns, as the services allocate request inputs for CUDA
// models). A pointer comparison, where Tensor::is_pinned() asks the driver about the pointer.
bool FromPinnedAllocator(const at::Tensor& part) {
  return part.is_contiguous() &&
         part.storage().allocator() == at::getHostAllocator(at::kCUDA);
}

}  // namespace
#else
struct ModelInstance::CudaState {};
struct ModelInstance::BatchResources {};
#endif

namespace {

// Thrown by LaunchOrThrow for a JPEG no decoder could decode when the caller takes no per-part
// errors: the batch then fails with INVALID_ARGUMENT rather than INTERNAL.
class UndecodableImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

std::vector<int64_t> CudaGraphBatchSizes(int64_t max_batch_size,
                                         const std::vector<int64_t>& requested) {
  if (requested.empty()) return CudaGraphBatchSizes(max_batch_size);
  std::vector<int64_t> sizes;
  for (int64_t b : requested) {
    if (b >= 1 && b < max_batch_size) sizes.push_back(b);
  }
  sizes.push_back(max_batch_size);  // Every batch the batcher can form has a graph.
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

int BucketFor(const std::vector<int64_t>& ascending_sizes, int64_t batch) {
  const auto it = std::lower_bound(ascending_sizes.begin(), ascending_sizes.end(), batch);
  return it == ascending_sizes.end() ? -1 : static_cast<int>(it - ascending_sizes.begin());
}

ModelInstance::ModelInstance(std::shared_ptr<VisionModel> module, InstanceOptions options)
    : module_(std::move(module)), options_(std::move(options)) {
  if (options_.image_preprocess.has_value()) preprocessor_.emplace(*options_.image_preprocess);
}

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
  if (options.image_preprocess.has_value()) {
    VITSERVE_RETURN_IF_ERROR(ValidatePreprocessSpec(*options.image_preprocess));
    if (options.image_preprocess->gpu_jpeg_decode && !options.device.is_cuda()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ModelInstance: GPU JPEG decoding needs a CUDA device; got ", options.device.str()));
    }
    if (options.image_preprocess->input_size != options.input_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ModelInstance: image_preprocess.input_size ", options.image_preprocess->input_size,
          " differs from input_size ", options.input_size));
    }
  }
  if (options.device_top_k < 0 || (options.device_top_k > 0 && !options.device.is_cuda())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ModelInstance: device_top_k ", options.device_top_k, " on ", options.device.str(),
        " (allowed: 0, or >= 1 on a CUDA device)"));
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
          c10::cuda::getStreamFromPool(/*isHighPriority=*/false, options_.device.index())});
    }
#endif
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(),
                              absl::StrCat("preparing the model on ", options_.device.str()));
  }
  if (options_.image_preprocess.has_value() && options_.image_preprocess->gpu_jpeg_decode) {
#ifdef VITSERVE_WITH_CUDA
    c10::cuda::CUDAGuard device_guard(options_.device);
#endif
    absl::StatusOr<std::unique_ptr<GpuJpegDecoder>> decoder = GpuJpegDecoder::Create();
    if (!decoder.ok()) {
      return absl::Status(decoder.status().code(),
                          absl::StrCat("GPU JPEG decoding on ", options_.device.str(), ": ",
                                       decoder.status().message(),
                                       " (set gpu_jpeg_decoding: false in the model config, or "
                                       "pass --gpu-jpeg-decoding=false)"));
    }
    jpeg_decoder_ = *std::move(decoder);
    LogInfo(absl::StrCat("GPU JPEG decoding on ", options_.device.str(), " with nvJPEG: ",
                         jpeg_decoder_->hardware()
                             ? "baseline files on the hardware JPEG engines"
                             : "this GPU has no JPEG engines; nvJPEG's default backend"));
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
    // One static input for every graph, each reading its first rows: replays never overlap
    // (one stream), so the graphs can share it as they share the pool, and more buckets cost
    // no input memory. Allocated outside the capture, so no graph's pool memory can alias it.
    const at::TensorOptions input_options =
        at::TensorOptions().device(options_.device).dtype(options_.dtype);
    const at::Tensor static_input =
        at::zeros({sizes.back(), 3, s, s}, input_options).contiguous(format);
    // Largest first: the shared pool grows once, and the smaller graphs fit in what it freed.
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      CudaState::Graph graph;
      graph.batch_size = *it;
      graph.input = static_input.narrow(0, 0, *it);
      // One eager pass on this stream first: lazily created state (cuBLAS handles and
      // workspaces, per-device copies a model caches) must exist before capture.
      (void)Forward(graph.input);
      cuda_->stream.synchronize();
      graph.graph = std::make_unique<at::cuda::CUDAGraph>();
      // Thread-local capture: other threads (other models loading or serving) may keep calling
      // the CUDA API meanwhile.
      graph.graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      graph.output = Forward(graph.input);
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

#ifdef VITSERVE_WITH_CUDA
namespace {

// [N, C] logits on a CUDA device -> [N, C + 2k] float32: the logits, then the softmax top-k
// (runtime_internal::LaunchSoftmaxTopK), on the current stream.
static_assert(kMaxDeviceTopKClasses == runtime_internal::kMaxTopKClasses);

at::Tensor WithTopKColumns(const at::Tensor& logits, int64_t k) {
  using runtime_internal::kMaxTopKClasses;
  TORCH_CHECK(logits.dim() == 2 && logits.is_cuda() && k >= 1 && k <= logits.size(1) &&
                  logits.size(1) <= kMaxTopKClasses,
              "device_top_k ", k, " needs [N, C] logits on a CUDA device with ", k,
              " <= C <= ", kMaxTopKClasses, "; the model returned ", logits.sizes(), " on ",
              logits.device().str());
  const at::Tensor rows = logits.stride(1) == 1 ? logits : logits.contiguous();
  at::Tensor out =
      at::empty({rows.size(0), rows.size(1) + 2 * k}, rows.options().dtype(at::kFloat));
  if (rows.size(0) == 0) return out;
  runtime_internal::SoftmaxTopKParams params;
  params.rows = static_cast<int>(rows.size(0));
  params.classes = static_cast<int>(rows.size(1));
  params.k = static_cast<int>(k);
  params.logits = rows.data_ptr();
  params.logits_row_stride = rows.stride(0);
  switch (rows.scalar_type()) {
    case at::kFloat:
      params.dtype = runtime_internal::LogitsDtype::kFloat32;
      break;
    case at::kHalf:
      params.dtype = runtime_internal::LogitsDtype::kFloat16;
      break;
    case at::kBFloat16:
      params.dtype = runtime_internal::LogitsDtype::kBFloat16;
      break;
    default:
      TORCH_CHECK(false, "device_top_k: logits of dtype ", rows.scalar_type(),
                  " (float32, float16 or bfloat16 expected)");
  }
  params.out = out.data_ptr<float>();
  params.out_row_stride = out.stride(0);
  C10_CUDA_CHECK(runtime_internal::LaunchSoftmaxTopK(
      params, c10::cuda::getCurrentCUDAStream(rows.device().index()).stream()));
  return out;
}

}  // namespace
#endif

at::Tensor ModelInstance::Forward(const at::Tensor& input) {
  at::Tensor output = module_->forward(input);
#ifdef VITSERVE_WITH_CUDA
  if (options_.device_top_k > 0) return WithTopKColumns(output, options_.device_top_k);
#endif
  return output;
}

absl::StatusOr<at::Tensor> ModelInstance::Run(const at::Tensor& batch) {
  return RunParts({batch});
}

bool IsImagePart(const at::Tensor& part) {
  return part.defined() && part.dim() == 4 && part.size(0) >= 1 && part.size(1) >= 1 &&
         part.size(2) >= 1 && part.size(3) == 3 && part.device().is_cpu() &&
         part.scalar_type() == at::kByte;
}

namespace {

// `parts` cut after their first `first_rows` rows (0 < first_rows < their rows): a part that
// straddles the cut is narrowed (a view; contiguous parts stay contiguous).
std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> SplitRows(
    const std::vector<at::Tensor>& parts, int64_t first_rows) {
  std::vector<at::Tensor> first, second;
  int64_t wanted = first_rows;
  for (const at::Tensor& part : parts) {
    const int64_t n = part.size(0);
    if (wanted >= n) {
      first.push_back(part);
      wanted -= n;
    } else if (wanted > 0) {
      first.push_back(part.narrow(0, 0, wanted));
      second.push_back(part.narrow(0, wanted, n - wanted));
      wanted = 0;
    } else {
      second.push_back(part);
    }
  }
  return {std::move(first), std::move(second)};
}

// Consecutive parts that are handled as one run: float rows (one copy into the input), or
// image parts whose images share one size (preprocessed together).
bool SameRun(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type()) return false;
  return a.scalar_type() != at::kByte || (a.size(1) == b.size(1) && a.size(2) == b.size(2));
}

// A JPEG part as the services write it (classify.cc): every file present and of one size, a
// size a JPEG can have.
absl::Status CheckJpegPart(const at::Tensor& part) {
  const EncodedJpeg first = JpegInPart(part, 0);
  for (int64_t row = 0; row < part.size(0); ++row) {
    const EncodedJpeg jpeg = JpegInPart(part, row);
    if (jpeg.bytes.empty() || jpeg.width < 1 || jpeg.height < 1 || jpeg.width > 65535 ||
        jpeg.height > 65535 || jpeg.width != first.width || jpeg.height != first.height) {
      return absl::InvalidArgumentError(absl::StrCat(
          "JPEG part row ", row, " is not a file of the part's size (", jpeg.width, "x",
          jpeg.height, ", ", jpeg.bytes.size(), " bytes; the first is ", first.width, "x",
          first.height, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

ModelInstance::LaunchedBatch::LaunchedBatch(LaunchedBatch&& other) noexcept
    : owner(other.owner),
      output(std::move(other.output)),
      stages(other.stages),
      resources(std::move(other.resources)),
      sleeping_wait(other.sleeping_wait) {}

ModelInstance::LaunchedBatch& ModelInstance::LaunchedBatch::operator=(
    LaunchedBatch&& other) noexcept {
  if (this != &other) {
    Release();
    owner = other.owner;
    output = std::move(other.output);
    stages = other.stages;
    resources = std::move(other.resources);
    sleeping_wait = other.sleeping_wait;
  }
  return *this;
}

ModelInstance::LaunchedBatch::~LaunchedBatch() { Release(); }

void ModelInstance::LaunchedBatch::Release() noexcept {
  if (resources == nullptr) return;
#ifdef VITSERVE_WITH_CUDA
  try {
    // The staging buffer and the output must outlive the copies that use them. The whole
    // stream: a launch that failed midway may not have recorded the batch's last event.
    owner->cuda_->stream.synchronize();
  } catch (const std::exception& e) {
    LogWarning(absl::StrCat("waiting for an unfinished batch: ", e.what()));
  }
#endif
  owner->ReturnResources(std::move(resources));
}

std::unique_ptr<ModelInstance::BatchResources> ModelInstance::AcquireResources() {
#ifdef VITSERVE_WITH_CUDA
  ++cuda_->batches_in_flight;
  if (!cuda_->idle_resources.empty()) {
    std::unique_ptr<BatchResources> resources = std::move(cuda_->idle_resources.back());
    cuda_->idle_resources.pop_back();
    return resources;
  }
#endif
  return std::make_unique<BatchResources>();
}

void ModelInstance::ReturnResources(std::unique_ptr<BatchResources> resources) {
#ifdef VITSERVE_WITH_CUDA
  --cuda_->batches_in_flight;
  cuda_->idle_resources.push_back(std::move(resources));
#endif
}

absl::StatusOr<at::Tensor> ModelInstance::RunParts(
    const std::vector<at::Tensor>& parts, BatchStages* stages,
    std::vector<std::pair<size_t, absl::Status>>* failed_parts) {
  absl::StatusOr<LaunchedBatch> launched = Launch(parts, failed_parts);
  if (!launched.ok()) return launched.status();
  return Finish(*std::move(launched), stages);
}

absl::StatusOr<at::Tensor> ModelInstance::Finish(LaunchedBatch batch, BatchStages* stages) {
#ifdef VITSERVE_WITH_CUDA
  if (batch.resources != nullptr) {
    try {
      BatchResources& events = *batch.resources;
      at::cuda::CUDAEvent& done = events.done(batch.sleeping_wait);
      done.synchronize();
      batch.stages.input_seconds = events.input_start.elapsed_time(events.forward_start) / 1e3;
      batch.stages.forward_seconds = events.forward_start.elapsed_time(events.forward_end) / 1e3;
      batch.stages.output_seconds = events.forward_end.elapsed_time(done) / 1e3;
    } catch (...) {
      return TorchErrorToStatus(std::current_exception(),
                                absl::StrCat("inference on ", options_.device.str()));
    }
    ReturnResources(std::move(batch.resources));
  }
#endif
  if (stages != nullptr) *stages = batch.stages;
  return std::move(batch.output);
}

absl::StatusOr<ModelInstance::LaunchedBatch> ModelInstance::Launch(
    const std::vector<at::Tensor>& parts,
    std::vector<std::pair<size_t, absl::Status>>* failed_parts) {
  if (parts.empty()) {
    return absl::InvalidArgumentError("model input must have at least one part");
  }
  const int64_t s = options_.input_size;
  int64_t rows = 0;
  for (const at::Tensor& part : parts) {
    const bool rows_part =
        part.defined() && part.dim() == 4 && part.size(0) >= 1 && part.size(1) == 3 &&
        part.device().is_cpu() && part.scalar_type() == at::kFloat &&
        (s > 0 ? part.size(2) == s && part.size(3) == s
               : part.sizes().slice(1) == parts.front().sizes().slice(1));
    if (!rows_part && IsJpegPart(part)) {
      if (jpeg_decoder_ == nullptr) {
        return absl::InvalidArgumentError(
            "model input has a JPEG part, but this instance was created without GPU JPEG "
            "decoding (gpu_jpeg_decoding is off for the model)");
      }
      VITSERVE_RETURN_IF_ERROR(CheckJpegPart(part));
      rows += part.size(0);
      continue;
    }
    if (!rows_part && IsImagePart(part) && !preprocessor_.has_value()) {
      return absl::InvalidArgumentError(
          "model input has uint8 image parts, but this instance was created without "
          "image_preprocess (device preprocessing is off for the model)");
    }
    if (!rows_part && !IsImagePart(part)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model input must be a CPU float32 [N,3,", s, ",", s, "] tensor with N >= 1",
          preprocessor_.has_value() ? " or CPU uint8 [N,H,W,3] images" : "",
          jpeg_decoder_ != nullptr ? " or a CPU uint8 [N,W] JPEG part" : "", "; got ",
          part.defined() ? absl::StrCat(c10::toString(part.scalar_type()), " ",
                                        part.device().str(), " ", c10::str(part.sizes()))
                         : std::string("an undefined tensor")));
    }
    rows += part.size(0);
  }
  try {
    std::vector<std::pair<size_t, absl::Status>> failed;  // This attempt's, kept if it succeeds.
    LaunchedBatch launched =
        LaunchOrThrow(parts, rows, failed_parts != nullptr ? &failed : nullptr);
    if (failed_parts != nullptr) {
      for (auto& entry : failed) failed_parts->push_back(std::move(entry));
    }
    return launched;
  } catch (const UndecodableImageError& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const c10::OutOfMemoryError& e) {
    if (rows == 1) {
      return TorchErrorToStatus(std::current_exception(),
                                absl::StrCat("inference of one row on ", options_.device.str()));
    }
    LogWarning(absl::StrCat("a batch of ", rows, " rows ran out of memory on ",
                            options_.device.str(), "; running it again as ", rows / 2, " + ",
                            rows - rows / 2, " rows (", e.what_without_backtrace(), ")"));
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(),
                              absl::StrCat("inference on ", options_.device.str()));
  }
  LaunchedBatch halves;
  halves.owner = this;
  absl::StatusOr<at::Tensor> output = RunInHalves(parts, rows, &halves.stages, failed_parts);
  if (!output.ok()) return output.status();
  halves.output = *std::move(output);
  return halves;
}

absl::StatusOr<at::Tensor> ModelInstance::RunInHalves(
    const std::vector<at::Tensor>& parts, int64_t rows, BatchStages* stages,
    std::vector<std::pair<size_t, absl::Status>>* failed_parts) {
#ifdef VITSERVE_WITH_CUDA
  // Blocks the failed attempt cached are free again; give them back so the halves (and the
  // other instances on this device) can use them.
  if (options_.device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  auto [first, second] = SplitRows(parts, rows / 2);
  BatchStages first_stages, second_stages;
  // The halves' failed parts, mapped back: the second half is the last second.size() parts
  // (its first one the tail of a part the cut went through, if any).
  std::vector<std::pair<size_t, absl::Status>> first_failed, second_failed;
  auto* first_failed_or_null = failed_parts != nullptr ? &first_failed : nullptr;
  auto* second_failed_or_null = failed_parts != nullptr ? &second_failed : nullptr;
  absl::StatusOr<at::Tensor> first_output = RunParts(first, &first_stages, first_failed_or_null);
  if (!first_output.ok()) return first_output.status();
  absl::StatusOr<at::Tensor> second_output =
      RunParts(second, &second_stages, second_failed_or_null);
  if (!second_output.ok()) return second_output.status();
  if (failed_parts != nullptr) {
    for (auto& entry : first_failed) failed_parts->push_back(std::move(entry));
    const size_t second_start = parts.size() - second.size();
    for (auto& [part, status] : second_failed) {
      failed_parts->emplace_back(second_start + part, std::move(status));
    }
  }
  if (stages != nullptr) {
    stages->input_seconds = first_stages.input_seconds + second_stages.input_seconds;
    stages->forward_seconds = first_stages.forward_seconds + second_stages.forward_seconds;
    stages->output_seconds = first_stages.output_seconds + second_stages.output_seconds;
  }
  try {
    return at::cat({*first_output, *second_output}, 0);
  } catch (...) {
    return TorchErrorToStatus(std::current_exception(), "joining the halves of a batch");
  }
}

template <typename SameRunFn, typename RunOf>
void ModelInstance::AssembleInput(size_t part_count, const SameRunFn& same_run,
                                  const RunOf& run_of, at::Tensor target) {
  int64_t row = 0;
  size_t i = 0;
  while (i < part_count) {
    size_t j = i + 1;
    while (j < part_count && same_run(j - 1, j)) ++j;
    const at::Tensor run = run_of(i, j);
    if (run.scalar_type() == at::kByte) {
      preprocessor_->Run(run, target.narrow(0, row, run.size(0)));
    } else {
      target.narrow(0, row, run.size(0)).copy_(run);  // Casts to the serving dtype.
    }
    row += run.size(0);
    i = j;
  }
}

#ifdef VITSERVE_WITH_CUDA
void ModelInstance::DecodeJpegs(const std::vector<EncodedJpeg>& jpegs,
                                const std::vector<uint8_t*>& outputs,
                                const std::vector<std::pair<size_t, int64_t>>& origins,
                                std::vector<std::pair<size_t, absl::Status>>* failed_parts) {
  const cudaStream_t stream = cuda_->stream.stream();
  for (size_t i : jpeg_decoder_->Decode(jpegs, outputs, stream)) {
    // nvJPEG refused the file: the CPU decoder gets it, as the CPU path would have.
    const EncodedJpeg& jpeg = jpegs[i];
    const size_t bytes = static_cast<size_t>(jpeg.width) * static_cast<size_t>(jpeg.height) * 3;
    absl::StatusOr<RgbImage> decoded = DecodeImage(jpeg.bytes, ImageLimits());
    if (decoded.ok() && decoded->width() == jpeg.width && decoded->height() == jpeg.height &&
        decoded->pixels.isContinuous()) {
      // From pageable memory: returns once the pixels are staged, so `decoded` may go.
      C10_CUDA_CHECK(cudaMemcpyAsync(outputs[i], decoded->pixels.data, bytes,
                                     cudaMemcpyHostToDevice, stream));
      continue;
    }
    const std::string error = absl::StrCat(
        "image ", origins[i].second, ": cannot be decoded (nvJPEG refused it; the CPU decoder: ",
        decoded.ok() ? absl::StrCat("decoded ", decoded->width(), "x", decoded->height(),
                                    " where the header says ", jpeg.width, "x", jpeg.height)
                     : std::string(decoded.status().message()),
        ")");
    if (failed_parts == nullptr) throw UndecodableImageError(error);
    C10_CUDA_CHECK(cudaMemsetAsync(outputs[i], 0, bytes, stream));  // Rows to be ignored.
    failed_parts->emplace_back(origins[i].first, absl::InvalidArgumentError(error));
  }
}
#else
void ModelInstance::DecodeJpegs(const std::vector<EncodedJpeg>&, const std::vector<uint8_t*>&,
                                const std::vector<std::pair<size_t, int64_t>>&,
                                std::vector<std::pair<size_t, absl::Status>>*) {
  // Unreachable: a JPEG decoder exists only on CUDA devices, and RunParts refuses JPEG parts
  // without one.
}
#endif

ModelInstance::LaunchedBatch ModelInstance::LaunchOrThrow(
    const std::vector<at::Tensor>& parts, int64_t rows,
    std::vector<std::pair<size_t, absl::Status>>* failed_parts) {
  c10::InferenceMode inference_mode;
  LaunchedBatch launched;
  launched.owner = this;
  const at::MemoryFormat format =
      options_.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  // [rows, 3, S, S]: S from the options, or from the (float) parts when input_size is 0.
  std::vector<int64_t> batch_sizes = {rows, 3, options_.input_size, options_.input_size};
  if (options_.input_size <= 0) {
    batch_sizes = parts.front().sizes().vec();
    batch_sizes[0] = rows;
  }
#ifdef VITSERVE_WITH_CUDA
  if (cuda_ != nullptr) {
    c10::cuda::CUDAStreamGuard stream_guard(cuda_->stream);
    launched.resources = AcquireResources();
    launched.sleeping_wait = rows >= kSleepingWaitRows;
    BatchResources& resources = *launched.resources;
    resources.input_start.record(cuda_->stream);
    // Ends the launch: the output is copied into page-locked host memory (torch's caching host
    // allocator) asynchronously, and the event Finish waits for is recorded after the copy.
    auto launch_output = [&](const at::Tensor& output_on_device) {
      resources.forward_end.record(cuda_->stream);
      const at::Tensor output_as_float = output_on_device.to(at::kFloat);
      launched.output = at::empty(output_as_float.sizes(),
                                  at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
      launched.output.copy_(output_as_float, /*non_blocking=*/true);
      resources.done(launched.sleeping_wait).record(cuda_->stream);
      return std::move(launched);
    };
    const at::TensorOptions on_device = at::TensorOptions().device(options_.device);
    // Buffers sized for the whole batch: float elements and image bytes.
    int64_t floats = 0;
    int64_t bytes = 0;
    int64_t pageable_floats = 0;  // Float parts not page-locked: staged through `pinned`.
    // JPEG parts decode into device_bytes too: per part, its images' sizes there.
    std::vector<std::vector<int64_t>> decoded_sizes(parts.size());
    for (size_t k = 0; k < parts.size(); ++k) {
      const at::Tensor& part = parts[k];
      if (IsJpegPart(part)) {
        const EncodedJpeg first = JpegInPart(part, 0);  // CheckJpegPart: all of one size.
        decoded_sizes[k] = {part.size(0), first.height, first.width, 3};
        bytes += part.size(0) * first.height * first.width * 3;
      } else if (part.scalar_type() == at::kByte) {
        bytes += part.numel();
      } else {
        floats += part.numel();
        if (!FromPinnedAllocator(part)) pageable_floats += part.numel();
      }
    }
    auto grow = [](at::Tensor& buffer, int64_t numel, const at::TensorOptions& options) {
      if (!buffer.defined() || buffer.numel() < numel) buffer = at::empty({numel}, options);
    };
    grow(cuda_->device_staging, floats, on_device.dtype(at::kFloat));
    grow(cuda_->device_bytes, bytes, on_device.dtype(at::kByte));
    grow(resources.pinned, pageable_floats,
         at::TensorOptions().dtype(at::kFloat).pinned_memory(true));
    // Each part to the device once, in order: page-locked parts (the services write requests
    // there for CUDA models) straight from where they are, others through the batch's `pinned`.
    // The device buffers are shared by the batches in flight: each batch's copies into them
    // run in stream order, after the previous batch's work has read them.
    // A batch has a part per request, so this loop works on offsets and raw pointers: a
    // narrow()/view() per part costs more CPU than the copy it describes.
    std::vector<int64_t> offsets;  // Per part: where it starts in device_bytes / device_staging.
    offsets.reserve(parts.size());
    uint8_t* const device_bytes = static_cast<uint8_t*>(cuda_->device_bytes.data_ptr());
    float* const device_floats = cuda_->device_staging.data_ptr<float>();
    float* const pinned_floats = resources.pinned.data_ptr<float>();
    int64_t float_offset = 0;
    int64_t byte_offset = 0;
    int64_t pinned_offset = 0;
    // The page-locked parts' copies, issued together after the loop (IssueHostToDeviceCopies).
    HostToDeviceCopies copies;
    copies.Reserve(parts.size());
    // The JPEG files, for one decoder call after the copies: where each goes, and from where.
    std::vector<EncodedJpeg> jpegs;
    std::vector<uint8_t*> jpeg_outputs;
    std::vector<std::pair<size_t, int64_t>> jpeg_origins;  // (part, row)
    for (size_t k = 0; k < parts.size(); ++k) {
      const at::Tensor& part = parts[k];
      if (!decoded_sizes[k].empty()) {
        offsets.push_back(byte_offset);
        for (int64_t row = 0; row < part.size(0); ++row) {
          const EncodedJpeg jpeg = JpegInPart(part, row);
          jpegs.push_back(jpeg);
          jpeg_outputs.push_back(device_bytes + byte_offset);
          jpeg_origins.emplace_back(k, row);
          byte_offset += static_cast<int64_t>(jpeg.width) * jpeg.height * 3;
        }
        continue;
      }
      const bool page_locked = FromPinnedAllocator(part);
      const void* source = part.data_ptr();
      void* destination = nullptr;
      if (part.scalar_type() == at::kByte) {
        offsets.push_back(byte_offset);
        destination = device_bytes + byte_offset;
        byte_offset += part.numel();
        if (!page_locked) {  // Pageable bytes: torch stages them.
          cuda_->device_bytes.narrow(0, offsets.back(), part.numel())
              .view(part.sizes())
              .copy_(part, /*non_blocking=*/true);
          continue;
        }
      } else {
        offsets.push_back(float_offset);
        destination = device_floats + float_offset;
        float_offset += part.numel();
        if (!page_locked) {
          at::Tensor staged = resources.pinned.narrow(0, pinned_offset, part.numel());
          staged.view(part.sizes()).copy_(part);
          source = pinned_floats + pinned_offset;
          pinned_offset += part.numel();
        }
      }
      // Page-locked and contiguous: an asynchronous DMA, issued directly. Through copy_ it
      // costs about ten times the CPU (dispatch, TensorIterator, and an event recorded for
      // torch's host allocator per part). The source stays valid: parts must outlive Finish,
      // which returns after the stream has finished the batch.
      copies.Add(destination, source, part.nbytes());
    }
    IssueHostToDeviceCopies(copies, cuda_->stream.stream(), &cuda_->batched_copies);
    if (!jpegs.empty()) {
      // The decoder's host buffers may still feed an earlier batch's decoding on the stream.
      if (cuda_->batches_in_flight > 1) cuda_->stream.synchronize();
      DecodeJpegs(jpegs, jpeg_outputs, jpeg_origins, failed_parts);
    }
    // Per part: its sizes on the device (a JPEG part's are its decoded images').
    auto sizes_of = [&](size_t k) {
      return decoded_sizes[k].empty() ? parts[k].sizes() : c10::IntArrayRef(decoded_sizes[k]);
    };
    auto same_run = [&](size_t a, size_t b) {
      const bool a_bytes = parts[a].scalar_type() == at::kByte;
      if (a_bytes != (parts[b].scalar_type() == at::kByte)) return false;
      return !a_bytes || (sizes_of(a)[1] == sizes_of(b)[1] && sizes_of(a)[2] == sizes_of(b)[2]);
    };
    // A run's parts were copied (or decoded) back to back: one view over all of it.
    auto run_of = [&](size_t i, size_t j) {
      int64_t rows_in_run = 0;
      for (size_t k = i; k < j; ++k) rows_in_run += parts[k].size(0);
      std::vector<int64_t> sizes = sizes_of(i).vec();
      const int64_t numel = c10::multiply_integers(sizes) / sizes[0] * rows_in_run;
      sizes[0] = rows_in_run;
      const at::Tensor& buffer =
          parts[i].scalar_type() == at::kByte ? cuda_->device_bytes : cuda_->device_staging;
      return buffer.narrow(0, offsets[i], numel).view(sizes);
    };
    const int bucket = BucketFor(cuda_->graph_sizes, rows);
    if (bucket >= 0) {
      CudaState::Graph& graph = cuda_->graphs[static_cast<size_t>(bucket)];
      AssembleInput(parts.size(), same_run, run_of, graph.input.narrow(0, 0, rows));
      resources.forward_start.record(cuda_->stream);
      graph.graph->replay();
      // Copied out (in stream order) before any other replay can reuse the graph pool's memory.
      return launch_output(graph.output.narrow(0, 0, rows));
    }
    at::Tensor input = at::empty(batch_sizes, on_device.dtype(options_.dtype), format);
    AssembleInput(parts.size(), same_run, run_of, input);
    resources.forward_start.record(cuda_->stream);
    return launch_output(Forward(input));
  }
#endif
  using Clock = std::chrono::steady_clock;
  const Clock::time_point input_start = Clock::now();
  const bool has_images = std::any_of(parts.begin(), parts.end(), [](const at::Tensor& part) {
    return part.scalar_type() == at::kByte;
  });
  at::Tensor input;
  if (!has_images) {
    input = parts.size() == 1 ? parts.front() : at::cat(parts, 0);
    if (options_.dtype != at::kFloat) input = input.to(options_.dtype);
    input = input.contiguous(format);
  } else {
    input = at::empty(batch_sizes, at::TensorOptions().dtype(options_.dtype), format);
    AssembleInput(
        parts.size(), [&parts](size_t a, size_t b) { return SameRun(parts[a], parts[b]); },
        [&parts](size_t i, size_t j) {
          return j == i + 1 ? parts[i]
                            : at::cat(std::vector<at::Tensor>(parts.begin() + static_cast<long>(i),
                                                              parts.begin() + static_cast<long>(j)),
                                      0);
        },
        input);
  }
  const Clock::time_point forward_start = Clock::now();
  at::Tensor output = Forward(input);
  const Clock::time_point output_start = Clock::now();
  launched.output = output.to(at::kFloat).contiguous();
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  launched.stages.input_seconds = seconds(forward_start - input_start);
  launched.stages.forward_seconds = seconds(output_start - forward_start);
  launched.stages.output_seconds = seconds(Clock::now() - output_start);
  return launched;
}

}  // namespace vitserve
