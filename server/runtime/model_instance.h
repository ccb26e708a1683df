// ModelInstance: one replica of a model on one device, driven by exactly one executor thread.
//
// Create() takes a freshly loaded module and prepares it for serving: eval(), moved to the
// device and dtype, optionally channels-last, then warmed up (WarmUp(), or later by the owner on
// the serving thread with defer_warm_up). Run() executes one batch:
// CPU float32 [N,3,S,S] in, CPU float32 output ([N,num_classes] for classifiers) out.
// On CUDA, the batch is staged through a reused pinned host buffer and copied asynchronously on
// the instance's own CUDA stream (from the pool), cast to the serving dtype on the device,
// computed, and the result copied back (which synchronises that stream).
// With cuda_graph_batch_sizes, WarmUp() also captures one CUDA graph of the forward pass per
// batch size (after the warm-up batches), and Run() replays the smallest one that fits the batch: the batch
// is copied into that graph's static input (rows beyond it keep stale data, which is harmless
// because every zoo model computes each row independently in eval mode) and the first N rows of
// its static output are copied back. Graphs share one memory pool and one static input (each
// reads its first rows); that is safe because replays never overlap (they run in the order of
// the instance's one stream) and each output is copied out, in that order, before the next
// replay.
//
// Ownership: the instance owns its module exclusively. A VisionModel is not Cloneable, so each
// replica must come from its own LoadModel() call (the model manager does this); never give two
// instances the same module.
// Thread-safety: NOT thread-safe. Create/WarmUp/Run/destruction must not overlap; the intended
// user is the single DynamicBatcher executor thread bound to this instance.
// Errors: Create: INVALID_ARGUMENT (null module, bad options, dtype not floating point), the
// device errors of a failed move (INTERNAL / RESOURCE_EXHAUSTED), and WarmUp's errors.
// WarmUp: the warm-up batch's error (INTERNAL / RESOURCE_EXHAUSTED) or a CUDA-graph capture
// failure (the message says how to run the model eagerly instead).
// Run: INVALID_ARGUMENT (batch not CPU float32 [N,3,S,S] with S = input_size, or, for RunParts,
// a part that is neither that nor an accepted image part), RESOURCE_EXHAUSTED
// (device out of memory for a single row), INTERNAL (any other torch error: a bug, since inputs
// are validated).
// Out of memory: a batch of more than one row that runs out of device memory is run again as
// two halves (recursively, so down to single rows), after the device's cached blocks are
// released, and the halves' outputs are joined: a burst of large batches costs time, not
// requests. Only a batch whose single row does not fit fails, with RESOURCE_EXHAUSTED.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "models/vision_model.h"
#include "server/image/gpu_jpeg_decoder.h"
#include "server/image/preprocess.h"
#include "server/image/tensor_preprocess.h"

namespace vitserve {

// The most classes InstanceOptions::device_top_k takes (a row's probabilities are held in the
// 48 KB of shared memory a GPU block gets by default).
inline constexpr int64_t kMaxDeviceTopKClasses = 12000;

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
  // CUDA only: batch sizes to capture a CUDA graph for (see the file comment); empty: eager.
  // Batches larger than the largest run eagerly. Needs input_size > 0.
  std::vector<int64_t> cuda_graph_batch_sizes;
  // Spatial size S of the [N,3,S,S] input; 0 skips the spatial check (and warm-up).
  int64_t input_size = 0;
  // cuDNN autotuning (a process-wide torch setting, set only when true and on CUDA). Off by
  // default: measured on an H100 (shvit_s1, fp16, dynamic batches of 1..4 rows), autotuning kept
  // re-running after warm-up and made serving 3x slower than without it. That run warmed up on
  // the loading thread, and cuDNN's caches are per thread (see WarmUp()); autotuning has not
  // been measured since warm-up moved to the serving thread.
  bool cudnn_benchmark = false;
  // true: Create() neither warms up nor captures CUDA graphs; the owner calls WarmUp() on the
  // thread that will call Run() (the model manager does so on each executor thread).
  bool defer_warm_up = false;
  // Set: RunParts also takes image parts, uint8 [n, h, w, 3] RGB pixels (the n images of a part
  // share one size), and resizes, crops and normalises them on the instance's device with this
  // spec (TensorPreprocessor); its input_size must equal input_size. With its gpu_jpeg_decode
  // (CUDA devices only; the build needs nvJPEG), RunParts also takes JPEG parts (jpeg_part.h:
  // the n files of a part decode to one size) and decodes them on the device first
  // (GpuJpegDecoder), a file the GPU cannot decode on the CPU.
  std::optional<PreprocessSpec> image_preprocess;
  // CUDA only, for a classifier ([N, C] logits, C <= kMaxDeviceTopKClasses): > 0 appends to
  // each output row the softmax top-k computed on the device, so that a reply needs no softmax
  // or sort on the host: the output is then [N, C + 2k] float32 (models/heads/topk.h,
  // ClassifierOutputLayout; the kernel is captured in the CUDA graphs with the forward pass).
  // 0: the logits alone.
  int64_t device_top_k = 0;
};

// The batch-size buckets for CUDA graphs of a model batching up to `max_batch_size` (>= 1):
// the powers of two below it, and itself (8 -> {1,2,4,8}; 12 -> {1,2,4,8,12}).
std::vector<int64_t> CudaGraphBatchSizes(int64_t max_batch_size);
// With `requested` sizes (a model config's cuda_graph_batch_sizes): those below the maximum,
// sorted and without repeats, and the maximum, so that every batch has a graph; empty: the
// default above.
std::vector<int64_t> CudaGraphBatchSizes(int64_t max_batch_size,
                                         const std::vector<int64_t>& requested);

// Whether `part` is an image part RunParts takes with image_preprocess: a CPU uint8
// [n >= 1, h >= 1, w >= 1, 3] tensor of RGB pixels.
bool IsImagePart(const at::Tensor& part);

// Index of the smallest of `ascending_sizes` that holds `batch` rows, or -1 when none does.
int BucketFor(const std::vector<int64_t>& ascending_sizes, int64_t batch);

// Where one batch's time went, in seconds: assembling the input on the device (copies and, for
// image parts, preprocessing), the forward pass (or CUDA graph replay), and bringing the output
// back to the host. On CUDA measured with CUDA events on the instance's stream (GPU time,
// including waits for the host between stages); on CPU with the host's clock.
struct BatchStages {
  double input_seconds = 0;
  double forward_seconds = 0;
  double output_seconds = 0;
};

class ModelInstance {
 private:
  struct BatchResources;  // A batch's stage events and staging buffer (CUDA builds).

 public:
  // A batch whose work Launch has issued on the device; Finish waits for it and returns its
  // output. Move-only. Finish it, or let it go, on the instance's thread and before the
  // instance is destroyed; letting it go unfinished waits for its work first.
  class LaunchedBatch {
   public:
    LaunchedBatch(LaunchedBatch&& other) noexcept;
    LaunchedBatch& operator=(LaunchedBatch&& other) noexcept;
    LaunchedBatch(const LaunchedBatch&) = delete;
    LaunchedBatch& operator=(const LaunchedBatch&) = delete;
    ~LaunchedBatch();

   private:
    friend class ModelInstance;
    LaunchedBatch() = default;
    // Waits for the batch's work (if any is pending) and gives its resources back.
    void Release() noexcept;

    ModelInstance* owner = nullptr;
    // CUDA: page-locked, written when the batch's work is done. Otherwise the finished output.
    at::Tensor output;
    BatchStages stages;  // Known at launch when `resources` is null.
    // CUDA: the events and staging the batch's work uses until it is done; null when the
    // batch was computed at launch (CPU, or a batch run again in halves).
    std::unique_ptr<BatchResources> resources;
    bool sleeping_wait = false;  // Wait asleep rather than spinning (kSleepingWaitRows).
  };

  static absl::StatusOr<std::unique_ptr<ModelInstance>> Create(
      std::shared_ptr<VisionModel> module, InstanceOptions options);

  ModelInstance(const ModelInstance&) = delete;
  ModelInstance& operator=(const ModelInstance&) = delete;
  ~ModelInstance();

  // Runs one batch (see the file comment). Not thread-safe.
  absl::StatusOr<at::Tensor> Run(const at::Tensor& batch);
  // Runs the batch made of `parts` (rows in order), as Run does with their concatenation. A part
  // is a CPU float32 [n_i,3,S,S] tensor of preprocessed rows or, with
  // options.image_preprocess, a CPU uint8 [n_i,h_i,w_i,3] tensor of images. On CUDA each part
  // is copied to the device once (asynchronously when page-locked), without concatenating
  // first, and consecutive image parts of one size are preprocessed together, straight into
  // the CUDA graph's static input.
  // With `stages`, also reports where the batch's time went (see BatchStages; set on success).
  // A JPEG part with a file that neither nvJPEG nor the CPU decodes: with `failed_parts`, the
  // batch runs with zeros in its place and (part index, INVALID_ARGUMENT) is appended there;
  // without, the whole batch fails with that error.
  absl::StatusOr<at::Tensor> RunParts(
      const std::vector<at::Tensor>& parts, BatchStages* stages = nullptr,
      std::vector<std::pair<size_t, absl::Status>>* failed_parts = nullptr);

  // RunParts in two halves, so that a caller can issue the next batch while one runs. Launch
  // checks the parts and issues the batch's work on the instance's stream (on CPU it computes
  // the batch); Finish waits for that work and returns the output, as RunParts does. Batches
  // launched one after another run in that order on the device: a second one may be launched
  // before the first is finished (their inputs, static graph buffers and staging are then
  // used in stream order, each batch with its own events and staging). A batch with JPEG parts
  // waits for the batches in flight before it decodes (the decoder's host buffers are shared).
  // Launch's errors are RunParts' (a batch that runs out of memory is run in halves there,
  // synchronously); Finish's are INTERNAL for a failure of the batch's device work. Parts
  // must stay valid until Finish returns.
  absl::StatusOr<LaunchedBatch> Launch(
      const std::vector<at::Tensor>& parts,
      std::vector<std::pair<size_t, absl::Status>>* failed_parts = nullptr);
  absl::StatusOr<at::Tensor> Finish(LaunchedBatch batch, BatchStages* stages = nullptr);

  // Runs the warm-up batches, then captures the CUDA graphs. Create() calls it unless
  // options.defer_warm_up; then call it once, on the thread that will call Run(), before the
  // first Run(). The thread matters: LibTorch keeps cuDNN execution plans (and handles) per
  // thread, so plans built while warming up on a loader thread are built again, per batch size,
  // on the serving thread, by live requests (0.5–1 s each for shvit_s1 on an H100).
  absl::Status WarmUp();

  const InstanceOptions& options() const { return options_; }

 private:
  struct CudaState;  // Stream and pinned buffer; defined only in CUDA builds.

  ModelInstance(std::shared_ptr<VisionModel> module, InstanceOptions options);
  absl::Status Prepare();
  // The module's forward pass, then (options.device_top_k) the top-k columns on the device.
  // Throws as torch does.
  at::Tensor Forward(const at::Tensor& input);
  absl::Status RunWarmUpBatches();
  absl::Status CaptureCudaGraphs();
  // CUDA only: decodes the JPEG files of a batch into `outputs` (device memory) on the instance's stream:
  // nvJPEG, then the CPU for a file nvJPEG refused; a file neither decodes fails its part
  // (origins[i] = (part, row)), into `failed_parts` or, when null, by throwing.
  void DecodeJpegs(const std::vector<EncodedJpeg>& jpegs, const std::vector<uint8_t*>& outputs,
                   const std::vector<std::pair<size_t, int64_t>>& origins,
                   std::vector<std::pair<size_t, absl::Status>>* failed_parts);
  // Launch's work once the parts are checked. `failed_parts` as RunParts' (may be null: a part
  // that fails then throws).
  LaunchedBatch LaunchOrThrow(const std::vector<at::Tensor>& parts, int64_t rows,
                              std::vector<std::pair<size_t, absl::Status>>* failed_parts);
  // CUDA: a batch's resources, from those given back or new; and giving them back.
  std::unique_ptr<BatchResources> AcquireResources();
  void ReturnResources(std::unique_ptr<BatchResources> resources);
  // After `parts` (rows > 1 rows) ran out of device memory: runs each half by RunParts and
  // joins the outputs (see "Out of memory" in the file comment).
  absl::StatusOr<at::Tensor> RunInHalves(
      const std::vector<at::Tensor>& parts, int64_t rows, BatchStages* stages,
      std::vector<std::pair<size_t, absl::Status>>* failed_parts);
  // Writes the rows of `parts` (already on target's device; see LaunchOrThrow) into `target`
  // ([rows,3,S,S], serving dtype), a run of consecutive parts at a time: float rows copied (and
  // cast) at once, image parts of one size preprocessed together. `same_run(i, j)` says
  // whether parts i and j (= i + 1) belong to one run; `run_of(i, j)` returns parts i..j-1 of
  // one run as one tensor ([n,3,S,S] float or [n,h,w,3] uint8).
  template <typename SameRunFn, typename RunOf>
  void AssembleInput(size_t part_count, const SameRunFn& same_run, const RunOf& run_of,
                     at::Tensor target);

  std::shared_ptr<VisionModel> module_;
  const InstanceOptions options_;
  std::unique_ptr<CudaState> cuda_;
  std::optional<TensorPreprocessor> preprocessor_;  // Set with options.image_preprocess.
  // Set with image_preprocess.gpu_jpeg_decode, on CUDA (Prepare).
  std::unique_ptr<GpuJpegDecoder> jpeg_decoder_;
};

}  // namespace vitserve
