// ModelManager: owns the served models, loads them from a Triton-style repository (or the one
// quick-mode model), and hands them out as refcounted, immutable ServableModel handles.
//
// A ServableModel is one loaded model: its normalised config, labels and preprocessing spec,
// N = instance_count ModelInstances (each from its own LoadModel call, so each has its own
// module copy) and one DynamicBatcher with one executor thread per instance. Reload builds and
// warms the new ServableModel first, then swaps it in atomically (TF Serving's ServableHandle
// idea): requests that already hold the old handle finish on the old model, whose destructor
// drains its batcher once the last handle is gone.
//
// HANDLE-RELEASE CONTRACT (callers, i.e. server/api): a ServableModel's destructor stops its
// batcher and joins its executor threads, so the last handle must never be dropped on one of
// those threads. Release handles only outside InferenceTask::on_done and outside any batcher
// callback (the api layer releases them in gRPC's OnDone). Defence in depth: executor threads
// never hold a handle of their own (runners and observers use raw pointers into the model's
// core), and if the last handle is nonetheless dropped inside one of the model's on_done
// callbacks the destructor detects it, logs an ERROR and drains on a detached thread instead of
// deadlocking.
//
// Ownership: the manager borrows the registry, ServerMetrics and the optional Clock; all three
// must outlive the manager AND every handle it handed out (main() creates them first). The
// default RealClock is shared with the handles and lives as long as they do.
// Thread-safety: every ModelManager and ServableModel method may be called concurrently.
// Load/Unload/LoadAll/Shutdown are serialised with each other; Get/List/AllReady never wait for
// a load. Errors: see each method.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "models/heads/topk.h"
#include "models/model_info.h"
#include "models/registry.h"
#include "server/batching/clock.h"
#include "server/batching/inference_task.h"
#include "server/config/model_config.h"
#include "server/config/model_repository.h"
#include "server/image/preprocess.h"
#include "server/metrics/server_metrics.h"
#include "vitserve/v1/model_config.pb.h"

namespace vitserve {

struct ModelManagerOptions {
  std::string repository_dir;  // Repository mode; empty in quick mode.
  std::string quick_model;     // Quick mode: `--model NAME` (architecture = serving name).
  std::string quick_weights;   // Quick mode: .safetensors; empty serves random weights (loudly).
  ServerDefaults defaults;     // From flags: device, precision, batching.
  // --cudnn-benchmark: cuDNN autotunes each convolution shape at warm-up (process-wide).
  bool cudnn_benchmark = false;
  Clock* clock = nullptr;      // RealClock when null. Borrowed: see the file comment.
};

enum class ModelState { kLoading, kReady, kUnavailable, kFailed };
// "LOADING", "READY", "UNAVAILABLE", "FAILED".
std::string_view ModelStateName(ModelState state);

struct ModelStatus {
  std::string name;
  ModelState state = ModelState::kLoading;
  std::string reason;  // Why it is not READY (load error, "unloaded", ...); empty when READY.
};

// Cumulative statistics since load, shaped like Triton's ModelStatistics.
struct DurationStat {
  uint64_t count = 0;
  uint64_t ns = 0;  // Total duration.
};
struct BatchSizeStat {
  uint64_t batch_size = 0;     // Rows in the executed batch.
  DurationStat compute_infer;  // One count per execution of that size.
};
struct ModelStatisticsSnapshot {
  uint64_t last_inference_ms = 0;  // Unix time (ms) of the last successful batch; 0: none yet.
  uint64_t inference_count = 0;    // Rows (images) computed successfully.
  uint64_t execution_count = 0;    // Successful batch executions (forward passes).
  DurationStat success;            // Tasks answered OK; ns from Schedule to on_done.
  DurationStat fail;               // Tasks rejected by Schedule or answered with an error.
  DurationStat queue;              // Per task that reached a batch: time waiting in the queue.
  DurationStat compute_infer;      // Per successful execution: the runner's wall time.
  std::vector<BatchSizeStat> batch_stats;  // Ascending batch_size.
};

// Places of the softmax top-k a classifier on a GPU computes there (ServableModel::
// output_layout): at least what a Classify request gets by default, so that the common request
// needs no softmax on the host.
inline constexpr int64_t kDeviceTopK = 5;

// One loaded model. Immutable after load; thread-safe; handed out as
// std::shared_ptr<const ServableModel> (see the handle-release contract above).
class ServableModel {
 public:
  ServableModel(const ServableModel&) = delete;
  ServableModel& operator=(const ServableModel&) = delete;
  // Drains the batcher (every accepted task completes) and joins its executor threads.
  ~ServableModel();

  const std::string& name() const { return config_.name(); }
  const v1::ModelConfig& config() const { return config_; }  // Normalised.
  const ModelInfo& info() const { return info_; }
  // A classifier's output rows as its instances compute them: with device_top_k > 0 (CUDA,
  // see InstanceOptions::device_top_k) they carry the softmax top-k besides the logits. Only a
  // task whose output_columns asks for them gets those columns (Schedule).
  const ClassifierOutputLayout& output_layout() const { return output_layout_; }
  // info().num_classes entries: the labels file's lines, or "0", "1", ... without one.
  const std::vector<std::string>& labels() const { return labels_; }
  const PreprocessSpec& preprocess_spec() const { return preprocess_spec_; }
  int64_t parameter_count() const { return parameter_count_; }
  bool random_weights() const { return random_weights_; }
  ModelMetrics& metrics() const { return *metrics_; }

  // Non-blocking: hands one request's preprocessed rows ([rows,3,S,S] CPU float32, S =
  // config().input().size(), 1 <= rows <= max_batch_size), or with device preprocessing its
  // images ([rows,H,W,3] CPU uint8, see DecodeAndPreprocess), to the model's batcher. On OK the
  // batcher owns the task and calls its on_done exactly once with [rows,num_classes] CPU float32
  // logits (a task whose output_columns is output_layout().columns() gets those columns) or an
  // error (DynamicBatcher::Schedule documents them); on error `*task` is left as it
  // was. Errors: INVALID_ARGUMENT (null task, no on_done, wrong shape/dtype/device),
  // RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (the model is shutting down).
  absl::Status Schedule(std::unique_ptr<InferenceTask>* task) const;

  // Admission at the door, before a request is decoded: a request holds one admission from
  // its arrival until its reply. OK, or RESOURCE_EXHAUSTED (saying why) when AdmissionLimit()
  // requests already hold one: overload is then refused at once instead of piling up decoded
  // requests in front of the batcher's queue (memory and waiting time bounded by the config).
  // Every OK must be ended by exactly one EndAdmission().
  absl::Status Admit() const;
  void EndAdmission() const;
  // max_queue_size requests waiting (being decoded or queued) plus the most that can be
  // computing at once (instance_count batches of max_batch_size single-image requests, twice
  // that on CUDA, where each instance keeps two batches in flight).
  int64_t AdmissionLimit() const;
  // DynamicBatcher::AnnounceArrival / WithdrawArrival: a request for this model is being
  // decoded, so waiting for a fuller batch may pay (see BatchingOptions::idle_dispatch).
  void AnnounceArrival() const;
  void WithdrawArrival() const;

  ModelStatisticsSnapshot Statistics() const;
  int64_t QueueDepth() const;
  int64_t InflightTasks() const;

 private:
  friend class ModelManager;
  struct Core;
  class Observer;

  ServableModel() = default;

  // Builds, warms up and starts a model from its normalised config. `model_dir` resolves the
  // weights and labels files ("" in quick mode: paths are used as given). `executor_idle_spin`:
  // BatchingOptions::idle_spin of its batcher (a server-wide setting, not in the config).
  static absl::StatusOr<std::shared_ptr<ServableModel>> Build(
      const v1::ModelConfig& config, const std::string& model_dir,
      const ModelRegistry& registry, ModelMetrics* metrics, std::shared_ptr<Clock> clock,
      absl::Duration executor_idle_spin);

  // Stops accepting work and drains within `grace` (DynamicBatcher::Stop). Manager only.
  void Stop(absl::Duration grace) const;

  v1::ModelConfig config_;
  ModelInfo info_;
  ClassifierOutputLayout output_layout_;
  std::vector<std::string> labels_;
  PreprocessSpec preprocess_spec_{};
  int64_t parameter_count_ = 0;
  bool random_weights_ = false;
  ModelMetrics* metrics_ = nullptr;
  // Instances, batcher, observer and counters: everything executor threads touch. Kept apart so
  // that it can outlive this object if it must be drained off-thread (see ~ServableModel).
  std::unique_ptr<Core> core_;
};

class ModelManager {
 public:
  // INVALID_ARGUMENT: neither or both of repository_dir / quick_model set, null registry or
  // metrics. NOT_FOUND: repository_dir is not a directory. Loads nothing yet (see LoadAll).
  static absl::StatusOr<std::unique_ptr<ModelManager>> Create(ModelManagerOptions options,
                                                              const ModelRegistry* registry,
                                                              ServerMetrics* metrics);

  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;
  // Shutdown(absl::InfiniteDuration()) if not already shut down.
  ~ModelManager();

  // Quick mode: loads the one model. Repository mode: every model in the repository; a failing
  // model becomes FAILED with its reason while the others still load. Returns OK, or
  // the code of the first failure with a message listing every failed model and why.
  absl::Status LoadAll();

  // A READY model's handle. NOT_FOUND (unknown; the known names listed), UNAVAILABLE (loading,
  // failed: with the reason, unloaded, or the server is shutting down).
  absl::StatusOr<std::shared_ptr<const ServableModel>> Get(std::string_view name) const;

  // Every known model (including FAILED and unloaded ones), sorted by name.
  std::vector<ModelStatus> List() const;

  // (Re)loads `name` from the repository: builds and warms the new model, then swaps it in.
  // On failure a previously READY version keeps serving (and the error is returned).
  // FAILED_PRECONDITION in quick mode; NOT_FOUND (no such model in the repository);
  // UNAVAILABLE (shutting down); the model's load error otherwise.
  absl::Status Load(std::string_view name);

  // Stops handing `name` out (state UNAVAILABLE, reason "unloaded"); requests that hold it
  // finish. Blocks until its queue drained if no request holds it. NOT_FOUND if unknown.
  absl::Status Unload(std::string_view name);

  // True when at least one model is known, none is LOADING or FAILED (unloaded ones are
  // ignored), and Shutdown has not been called (Triton's strict readiness).
  bool AllReady() const;

  // Stops every model's batcher: no new work, accepted work finishes within `grace` (models
  // drain in parallel), the rest fails with UNAVAILABLE. Afterwards Get answers UNAVAILABLE.
  // Idempotent. Must not be called from an on_done callback.
  void Shutdown(absl::Duration grace);

  bool quick_mode() const { return !options_.quick_model.empty(); }

 private:
  struct Entry {
    ModelState state = ModelState::kLoading;
    std::string reason;
    std::shared_ptr<const ServableModel> model;  // Set only when READY.
  };

  ModelManager(ModelManagerOptions options, const ModelRegistry* registry,
               ServerMetrics* metrics, std::shared_ptr<Clock> clock,
               std::optional<ModelRepository> repository);

  // Loads `name` (config already known or to be read) and publishes the result.
  absl::Status LoadModelLocked(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  absl::StatusOr<std::shared_ptr<ServableModel>> BuildModel(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);
  std::string KnownNamesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ModelManagerOptions options_;
  const ModelRegistry* const registry_;
  ServerMetrics* const metrics_;
  const std::shared_ptr<Clock> clock_;
  const std::optional<ModelRepository> repository_;

  // Serialises LoadAll/Load/Unload/Shutdown; held while building (never while serving).
  absl::Mutex load_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vitserve
