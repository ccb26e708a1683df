#include "server/model_manager.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/module.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "models/model_loader.h"
#include "models/weights/state_dict.h"
#include "server/batching/batch_observer.h"
#include "server/batching/batching_options.h"
#include "server/batching/dynamic_batcher.h"
#include "server/config/file_util.h"
#include "server/image/jpeg_part.h"
#include "server/log.h"
#include "server/runtime/device.h"
#include "server/runtime/model_instance.h"

namespace vitserve {

std::string_view ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kLoading:
      return "LOADING";
    case ModelState::kReady:
      return "READY";
    case ModelState::kUnavailable:
      return "UNAVAILABLE";
    case ModelState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

// ---------------------------------------------------------------------------------------------
// ServableModel

namespace {

// Copies `source`'s parameters and buffers into `target`, by state-dict name; both are instances
// of one architecture built by LoadModel. INTERNAL when their layouts differ (a registry bug).
absl::Status CopyStateInto(const std::map<std::string, at::Tensor>& source,
                           torch::nn::Module& target) {
  const std::map<std::string, at::Tensor> target_tensors = StateDictTensors(target);
  if (target_tensors.size() != source.size()) {
    return absl::InternalError(absl::StrCat("the instance has ", target_tensors.size(),
                                            " tensors where the first one has ", source.size()));
  }
  c10::InferenceMode inference_mode;
  for (const auto& [tensor_name, tensor] : target_tensors) {
    auto it = source.find(tensor_name);
    if (it == source.end()) {
      return absl::InternalError(
          absl::StrCat("the instance has ", tensor_name, ", which the first one lacks"));
    }
    at::Tensor(tensor).copy_(it->second);
  }
  return absl::OkStatus();
}

at::ScalarType ToScalarType(v1::Precision precision) {
  switch (precision) {
    case v1::FP16:
      return at::kHalf;
    case v1::BF16:
      return at::kBFloat16;
    default:
      return at::kFloat;
  }
}

uint64_t ToNs(absl::Duration d) {
  return d <= absl::ZeroDuration() ? 0 : static_cast<uint64_t>(absl::ToInt64Nanoseconds(d));
}

}  // namespace

// Everything executor threads touch. Members are destroyed in reverse order: the batcher first
// (its destructor drains and joins), while the instances, observer and counters it uses are
// still alive.
struct ServableModel::Core {
  struct Counters {
    mutable absl::Mutex mu;
    ModelStatisticsSnapshot totals ABSL_GUARDED_BY(mu);
    std::map<int64_t, DurationStat> by_batch_size ABSL_GUARDED_BY(mu);
  };

  std::string name;
  std::shared_ptr<Clock> clock;
  ModelMetrics* metrics = nullptr;
  Counters counters;
  std::unique_ptr<Observer> observer;
  std::vector<std::unique_ptr<ModelInstance>> instances;
  std::unique_ptr<DynamicBatcher> batcher;
  // Requests admitted and not yet answered (Admit / EndAdmission), and their limit.
  std::atomic<int64_t> admitted{0};
  int64_t admission_limit = 0;
};

namespace {
// The Core whose on_done callback this thread is running, if any (see ~ServableModel).
thread_local const void* tls_in_callback_of = nullptr;
}  // namespace

// Feeds the batcher's events to the model's Prometheus metrics and statistics counters.
class ServableModel::Observer final : public BatchObserver {
 public:
  explicit Observer(Core* core) : core_(core) {}

  void OnQueueDepthChanged(int64_t depth) override { core_->metrics->SetQueueDepth(depth); }

  void OnTaskDequeued(absl::Duration queue_time) override {
    core_->metrics->ObserveQueue(queue_time);
    absl::MutexLock lock(&core_->counters.mu);
    core_->counters.totals.queue.count++;
    core_->counters.totals.queue.ns += ToNs(queue_time);
  }

  void OnBatchComputed(int64_t batch_rows, absl::Duration compute_time,
                       const absl::Status& status) override {
    if (!status.ok()) return;  // Failures are counted per task in the on_done wrapper.
    core_->metrics->ObserveBatchSize(batch_rows);
    core_->metrics->ObserveCompute(compute_time);
    const uint64_t now_ms = static_cast<uint64_t>(absl::ToUnixMillis(core_->clock->Now()));
    absl::MutexLock lock(&core_->counters.mu);
    ModelStatisticsSnapshot& totals = core_->counters.totals;
    totals.last_inference_ms = now_ms;
    totals.inference_count += static_cast<uint64_t>(batch_rows);
    totals.execution_count++;
    totals.compute_infer.count++;
    totals.compute_infer.ns += ToNs(compute_time);
    DurationStat& by_size = core_->counters.by_batch_size[batch_rows];
    by_size.count++;
    by_size.ns += ToNs(compute_time);
  }

  void OnIdlePoll(bool paid) override { core_->metrics->CountIdlePoll(paid); }

 private:
  Core* const core_;
};

absl::StatusOr<std::shared_ptr<ServableModel>> ServableModel::Build(
    const v1::ModelConfig& config, const std::string& model_dir, const ModelRegistry& registry,
    ModelMetrics* metrics, std::shared_ptr<Clock> clock, absl::Duration executor_idle_spin) {
  const std::string& name = config.name();
  auto in_dir = [&](const std::string& file) {
    return JoinPath(model_dir, file);
  };

  // Weights: the configured file; random initialisation only when explicitly allowed.
  std::string weights_path;
  if (!config.weights().empty()) {
    const std::string path = in_dir(config.weights());
    if (IsRegularFile(path)) {
      weights_path = path;
    } else if (!config.allow_random_weights()) {
      return absl::NotFoundError(absl::StrCat(
          "model '", name, "': weights file '", path,
          "' does not exist (set allow_random_weights: true to serve random weights for "
          "testing)"));
    }
  }

  VITSERVE_ASSIGN_OR_RETURN(const c10::Device device, ParseDevice(config.device()));

  std::shared_ptr<ServableModel> model(new ServableModel());
  model->config_ = config;
  model->metrics_ = metrics;
  auto core = std::make_unique<Core>();
  core->name = name;
  core->clock = std::move(clock);
  core->metrics = metrics;

  PreprocessSpec& spec = model->preprocess_spec_;
  spec.input_size = config.input().size();
  spec.crop_pct = config.input().crop_pct();
  for (int c = 0; c < 3; ++c) {
    spec.mean[c] = config.input().mean(c);
    spec.std[c] = config.input().std(c);
  }
  spec.interpolation = config.input().interpolation() == "bilinear" ? Interpolation::kBilinear
                                                                    : Interpolation::kBicubic;
  spec.pin_memory = device.is_cuda();  // Rows the GPU copies from directly (ModelInstance).
  spec.on_device = config.device_preprocessing();
  spec.gpu_jpeg_decode = config.gpu_jpeg_decoding();

  // One LoadModel per instance: a VisionModel cannot be cloned, and instances must not share a
  // module (each lives on its own stream and executor thread).
  const v1::BatchingPolicy& batching = config.batching();
  InstanceOptions instance_options;
  instance_options.device = device;
  instance_options.dtype = ToScalarType(config.precision());
  instance_options.input_size = config.input().size();
  instance_options.channels_last = config.channels_last();
  if (spec.on_device) instance_options.image_preprocess = spec;
  instance_options.warmup_iterations = static_cast<int>(config.warmup_iterations());
  // Warm-up sizes: {1, max_batch_size}; on CUDA every size the batcher can form (up to 64 of
  // them; beyond that powers of two plus the maximum), so that first-use costs per shape (kernel
  // selection, workspace allocation) are paid at load rather than by requests. With CUDA graphs
  // only the graph buckets ever run, so only they are warmed up (and then captured).
  const int64_t max_batch = batching.max_batch_size();
  instance_options.warmup_batch_sizes = {1};
  if (device.is_cuda() && config.cuda_graphs()) {
    instance_options.cuda_graph_batch_sizes = CudaGraphBatchSizes(
        max_batch, {config.cuda_graph_batch_sizes().begin(),
                    config.cuda_graph_batch_sizes().end()});
    instance_options.warmup_batch_sizes = instance_options.cuda_graph_batch_sizes;
  } else {
    if (device.is_cuda()) {
      for (int64_t b = 2; b < max_batch; b = max_batch <= 64 ? b + 1 : b * 2) {
        instance_options.warmup_batch_sizes.push_back(b);
      }
    }
    if (max_batch > 1) instance_options.warmup_batch_sizes.push_back(max_batch);
  }
  instance_options.defer_warm_up = true;  // Done on the executor threads, below.
  LoadOptions load_options;
  load_options.weights_path = weights_path;
  load_options.task = FromProtoTask(config.task());
  load_options.num_classes = config.num_classes();
  load_options.approximate_gelu = config.approximate_gelu();
  // Random weights are drawn once per model: each instance's LoadModel draws its own, so the
  // later ones take the first one's, and every instance serves the same model.
  std::map<std::string, at::Tensor> first_random_state;
  for (uint32_t i = 0; i < config.instance_count(); ++i) {
    absl::StatusOr<LoadedModel> loaded = LoadModel(registry, config.architecture(), load_options);
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(), absl::StrCat("model '", name, "': ",
                                                               loaded.status().message()));
    }
    if (i == 0) {
      model->info_ = loaded->info;
      model->output_layout_.num_classes = loaded->info.num_classes;
      // The softmax top-k of a classifier on a GPU is computed there, as many places as a
      // request gets by default (the host computes more from the logits).
      if (device.is_cuda() && loaded->info.task == ModelTask::kClassification &&
          loaded->info.num_classes >= kDeviceTopK &&
          loaded->info.num_classes <= kMaxDeviceTopKClasses) {
        model->output_layout_.device_top_k = kDeviceTopK;
        instance_options.device_top_k = kDeviceTopK;
      }
      model->parameter_count_ = loaded->parameter_count;
      model->random_weights_ = loaded->random_weights;
    }
    if (loaded->random_weights) {
      if (i == 0) {
        c10::InferenceMode inference_mode;
        for (const auto& [tensor_name, tensor] : StateDictTensors(*loaded->module)) {
          first_random_state.emplace(tensor_name, tensor.clone());
        }
      } else if (absl::Status copied = CopyStateInto(first_random_state, *loaded->module);
                 !copied.ok()) {
        return absl::Status(copied.code(), absl::StrCat("model '", name, "' instance ", i, ": ",
                                                        copied.message()));
      }
    }
    absl::StatusOr<std::unique_ptr<ModelInstance>> instance =
        ModelInstance::Create(std::move(loaded->module), instance_options);
    if (!instance.ok()) {
      return absl::Status(instance.status().code(),
                          absl::StrCat("model '", name, "' instance ", i, ": ",
                                       instance.status().message()));
    }
    core->instances.push_back(*std::move(instance));
  }
  // The config may override the architecture's input geometry; ModelInfo reflects what serves.
  model->info_.input_size = config.input().size();
  for (int c = 0; c < 3; ++c) {
    model->info_.mean[c] = config.input().mean(c);
    model->info_.std[c] = config.input().std(c);
  }
  model->info_.crop_pct = config.input().crop_pct();
  model->info_.interpolation = config.input().interpolation();

  if (!config.labels().empty()) {
    absl::StatusOr<std::vector<std::string>> labels =
        ReadLabels(in_dir(config.labels()), model->info_.num_classes);
    if (!labels.ok()) {
      return absl::Status(labels.status().code(),
                          absl::StrCat("model '", name, "': ", labels.status().message()));
    }
    model->labels_ = *std::move(labels);
  } else {
    model->labels_.reserve(model->info_.num_classes);
    for (int64_t i = 0; i < model->info_.num_classes; ++i) {
      model->labels_.push_back(absl::StrCat(i));
    }
  }

  BatchingOptions batching_options;
  batching_options.max_batch_size = static_cast<int>(batching.max_batch_size());
  batching_options.max_queue_delay = absl::Microseconds(batching.max_queue_delay_us());
  for (uint32_t size : batching.preferred_batch_sizes()) {
    batching_options.preferred_batch_sizes.push_back(static_cast<int>(size));
  }
  batching_options.max_queue_size = static_cast<int>(batching.max_queue_size());
  batching_options.idle_spin = executor_idle_spin;
  batching_options.default_timeout =
      batching.default_timeout_ms() == 0
          ? absl::InfiniteDuration()
          : absl::Milliseconds(static_cast<int64_t>(batching.default_timeout_ms()));

  // Runners and the observer point into the Core, never at the ServableModel: executor threads
  // hold no handle, so they can never drop the last one.
  // Each instance warms up (and captures its CUDA graphs) on its own executor thread, the one
  // that serves it (see ModelInstance::WarmUp for why the thread matters); the batcher starts
  // taking requests only when every instance is warm.
  // On CUDA each executor issues its next batch on the instance's stream before it answers the
  // requests of the batch in flight (DynamicBatcher's overlap_batches). On the CPU a launch
  // computes the whole batch, so overlapping would only delay the answers.
  const bool overlap_batches = device.is_cuda();
  std::vector<PartsLauncher> launchers;
  std::vector<ExecutorSetup> warm_ups;
  for (const std::unique_ptr<ModelInstance>& instance : core->instances) {
    ModelInstance* raw = instance.get();
    ModelMetrics* metrics = core->metrics;
    launchers.push_back([raw, metrics](const BatchParts& parts,
                                       std::vector<PartError>* part_errors)
                            -> absl::StatusOr<BatchCompletion> {
      std::vector<std::pair<size_t, absl::Status>> failed_parts;
      absl::StatusOr<ModelInstance::LaunchedBatch> launched = raw->Launch(parts, &failed_parts);
      for (auto& [part, status] : failed_parts) part_errors->push_back({part, std::move(status)});
      if (!launched.ok()) return launched.status();
      // BatchCompletion is a std::function, which must be copyable; the batch is not.
      auto batch = std::make_shared<ModelInstance::LaunchedBatch>(*std::move(launched));
      return BatchCompletion([raw, metrics, batch]() -> absl::StatusOr<at::Tensor> {
        BatchStages stages;
        absl::StatusOr<at::Tensor> output = raw->Finish(std::move(*batch), &stages);
        if (output.ok()) {
          metrics->ObserveComputeStages(stages.input_seconds, stages.forward_seconds,
                                        stages.output_seconds);
        }
        return output;
      });
    });
    warm_ups.push_back([raw] { return raw->WarmUp(); });
  }
  core->observer = std::make_unique<Observer>(core.get());
  absl::StatusOr<std::unique_ptr<DynamicBatcher>> batcher =
      DynamicBatcher::Create(batching_options, std::move(launchers), overlap_batches,
                             core->clock.get(), core->observer.get(), std::move(warm_ups));
  if (!batcher.ok()) {
    return absl::Status(batcher.status().code(),
                        absl::StrCat("model '", name, "': ", batcher.status().message()));
  }
  core->batcher = *std::move(batcher);
  // Queued, plus the batches in flight: one per instance, two when they overlap.
  core->admission_limit =
      static_cast<int64_t>(batching.max_queue_size()) +
      (overlap_batches ? 2 : 1) * static_cast<int64_t>(core->instances.size()) *
          static_cast<int64_t>(batching.max_batch_size());
  model->core_ = std::move(core);

  if (model->random_weights_) {
    LogWarning(absl::StrCat(
        "model '", name, "' (", config.architecture(),
        ") is serving RANDOM WEIGHTS: its predictions are meaningless. Testing only; give it a "
        "weights file for real use."));
  }
  return model;
}

ServableModel::~ServableModel() {
  if (core_ == nullptr) return;
  if (tls_in_callback_of == core_.get()) {
    // The last handle was dropped inside this model's own on_done, i.e. on one of its executor
    // threads (a violation of the contract in model_manager.h). Joining here would deadlock, so
    // drain on a thread of our own; the Core owns everything the executors touch.
    LogError(absl::StrCat("model '", core_->name,
                          "': last handle released inside an on_done callback; draining its "
                          "batcher on a detached thread (fix the caller)"));
    std::thread([core = std::move(core_)]() mutable { core.reset(); }).detach();
    return;
  }
  core_.reset();  // Drains the batcher and joins its executor threads.
}

void ServableModel::Stop(absl::Duration grace) const { core_->batcher->Stop(grace); }

absl::Status ServableModel::Admit() const {
  const int64_t before = core_->admitted.fetch_add(1, std::memory_order_relaxed);
  if (before < core_->admission_limit) return absl::OkStatus();
  core_->admitted.fetch_sub(1, std::memory_order_relaxed);
  return absl::ResourceExhaustedError(absl::StrCat(
      "model '", name(), "' is overloaded: ", core_->admission_limit,
      " requests are already in flight (max_queue_size ", config_.batching().max_queue_size(),
      " waiting plus ", core_->admission_limit - config_.batching().max_queue_size(),
      " computing); retry later"));
}

void ServableModel::EndAdmission() const {
  core_->admitted.fetch_sub(1, std::memory_order_relaxed);
}

int64_t ServableModel::AdmissionLimit() const { return core_->admission_limit; }

void ServableModel::AnnounceArrival() const { core_->batcher->AnnounceArrival(); }

void ServableModel::WithdrawArrival() const { core_->batcher->WithdrawArrival(); }

absl::Status ServableModel::Schedule(std::unique_ptr<InferenceTask>* task) const {
  Core* const core = core_.get();
  auto reject = [core](absl::Status status) {
    absl::MutexLock lock(&core->counters.mu);
    core->counters.totals.fail.count++;
    return status;
  };
  if (task == nullptr || *task == nullptr) {
    return reject(absl::InvalidArgumentError("Schedule: null task"));
  }
  InferenceTask& t = **task;
  if (!t.on_done) return reject(absl::InvalidArgumentError("Schedule: task has no on_done"));
  const int64_t size = config_.input().size();
  const at::Tensor& in = t.input;
  const bool rows = in.defined() && in.dim() == 4 && in.size(0) >= 1 && in.size(1) == 3 &&
                    in.size(2) == size && in.size(3) == size && in.device().is_cpu() &&
                    in.scalar_type() == at::kFloat;
  // Images for the instance to preprocess on its device (DecodeAndPreprocess, on_device).
  // Encoded JPEGs for the instance to decode on its GPU (jpeg_part.h, gpu_jpeg_decode).
  const bool images = preprocess_spec_.on_device &&
                      (IsImagePart(in) || (preprocess_spec_.gpu_jpeg_decode && IsJpegPart(in)));
  if (!rows && !images) {
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "model '", name(), "' takes preprocessed CPU float32 [N,3,", size, ",", size, "] input",
        preprocess_spec_.on_device ? " or CPU uint8 [N,H,W,3] images" : "",
        preprocess_spec_.gpu_jpeg_decode ? " or a CPU uint8 [N,W] JPEG part" : "", "; got ",
        in.defined() ? absl::StrCat(c10::toString(in.scalar_type()), " ", in.device().str(),
                                    " ", c10::str(in.sizes()))
                     : std::string("an undefined tensor"))));
  }

  // Tasks see the logits unless they ask for the device's top-k columns too.
  const int64_t asked_columns = t.output_columns;
  if (asked_columns != 0 && asked_columns != output_layout_.num_classes &&
      asked_columns != output_layout_.columns()) {
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "Schedule: output_columns ", asked_columns, " (model '", name(), "' outputs ",
        output_layout_.num_classes, " logits and ", 2 * output_layout_.device_top_k,
        " top-k columns)")));
  }
  if (asked_columns == 0 && output_layout_.device_top_k > 0) {
    t.output_columns = output_layout_.num_classes;
  }

  // Wrap on_done to count the outcome. The caller's callback is kept in a shared holder so it
  // can be put back when Schedule fails (the task must then be left as it was).
  auto user_done =
      std::make_shared<std::function<void(absl::StatusOr<at::Tensor>)>>(std::move(t.on_done));
  const absl::Time start = core->clock->Now();
  t.on_done = [core, start, user_done](absl::StatusOr<at::Tensor> result) {
    const uint64_t ns = ToNs(core->clock->Now() - start);
    {
      absl::MutexLock lock(&core->counters.mu);
      DurationStat& stat =
          result.ok() ? core->counters.totals.success : core->counters.totals.fail;
      stat.count++;
      stat.ns += ns;
    }
    const void* const previous = tls_in_callback_of;
    tls_in_callback_of = core;
    (*user_done)(std::move(result));
    tls_in_callback_of = previous;
  };
  absl::Status status = core->batcher->Schedule(task);
  if (!status.ok()) {
    (*task)->on_done = std::move(*user_done);
    (*task)->output_columns = asked_columns;
    return reject(std::move(status));
  }
  return absl::OkStatus();
}

ModelStatisticsSnapshot ServableModel::Statistics() const {
  absl::MutexLock lock(&core_->counters.mu);
  ModelStatisticsSnapshot snapshot = core_->counters.totals;
  for (const auto& [batch_size, stat] : core_->counters.by_batch_size) {
    snapshot.batch_stats.push_back(BatchSizeStat{static_cast<uint64_t>(batch_size), stat});
  }
  return snapshot;
}

int64_t ServableModel::QueueDepth() const { return core_->batcher->QueueDepth(); }
int64_t ServableModel::InflightTasks() const { return core_->batcher->InflightTasks(); }

// ---------------------------------------------------------------------------------------------
// ModelManager

namespace {
// A shared_ptr that does not own: for the caller's clock, which outlives everything (contract).
std::shared_ptr<Clock> Borrowed(Clock* clock) { return std::shared_ptr<Clock>(clock, [](Clock*) {}); }
}  // namespace

absl::StatusOr<std::unique_ptr<ModelManager>> ModelManager::Create(ModelManagerOptions options,
                                                                   const ModelRegistry* registry,
                                                                   ServerMetrics* metrics) {
  if (registry == nullptr || metrics == nullptr) {
    return absl::InvalidArgumentError("ModelManager: registry and metrics must not be null");
  }
  if (options.repository_dir.empty() == options.quick_model.empty()) {
    return absl::InvalidArgumentError(
        "give exactly one of --model_repository (a repository) or --model (quick mode)");
  }
  std::optional<ModelRepository> repository;
  if (!options.repository_dir.empty()) {
    VITSERVE_ASSIGN_OR_RETURN(ModelRepository opened,
                              ModelRepository::Open(options.repository_dir));
    repository.emplace(std::move(opened));
  }
  std::shared_ptr<Clock> clock =
      options.clock != nullptr ? Borrowed(options.clock) : std::make_shared<RealClock>();
  // A process-wide torch setting: set once here, before any model is warmed up (autotuning runs
  // at warm-up, once per shape; CUDA graphs then replay what it chose).
  if (options.cudnn_benchmark) at::globalContext().setBenchmarkCuDNN(true);
  return std::unique_ptr<ModelManager>(new ModelManager(
      std::move(options), registry, metrics, std::move(clock), std::move(repository)));
}

ModelManager::ModelManager(ModelManagerOptions options, const ModelRegistry* registry,
                           ServerMetrics* metrics, std::shared_ptr<Clock> clock,
                           std::optional<ModelRepository> repository)
    : options_(std::move(options)),
      registry_(registry),
      metrics_(metrics),
      clock_(std::move(clock)),
      repository_(std::move(repository)) {}

ModelManager::~ModelManager() { Shutdown(absl::InfiniteDuration()); }

absl::StatusOr<std::shared_ptr<ServableModel>> ModelManager::BuildModel(const std::string& name) {
  v1::ModelConfig config;
  std::string model_dir;
  if (quick_mode()) {
    VITSERVE_ASSIGN_OR_RETURN(config, QuickModeConfig(*registry_, options_.defaults,
                                                      options_.quick_model,
                                                      options_.quick_weights));
  } else {
    VITSERVE_ASSIGN_OR_RETURN(config, repository_->LoadConfig(name, *registry_,
                                                              options_.defaults));
    model_dir = repository_->ModelDir(name);
  }
  ModelMetrics& model_metrics =
      metrics_->ForModel(config.name(), std::string(ModelTaskName(FromProtoTask(config.task()))));
  const absl::StatusOr<c10::Device> device = ParseDevice(config.device());
  const bool on_gpu = device.ok() && device->is_cuda();
  const absl::Time start = absl::Now();
  VITSERVE_ASSIGN_OR_RETURN(
      std::shared_ptr<ServableModel> model,
      ServableModel::Build(config, model_dir, *registry_, &model_metrics, clock_,
                           ModelIdleSpin(options_.defaults.executor_idle_spin_us, on_gpu)));
  if (on_gpu) {
    metrics_->SetGpuMemoryUsed(device->str(), GpuMemoryUsedBytes(*device));
  }
  LogInfo(absl::StrCat("model '", name, "' (", config.architecture(), ", ",
                       model->parameter_count(), " parameters, ", config.device(), ", ",
                       v1::Precision_Name(config.precision()), ", ", config.instance_count(),
                       " instance(s)) ready in ",
                       absl::FormatDuration(absl::Trunc(absl::Now() - start,
                                                        absl::Milliseconds(1)))));
  return model;
}

absl::Status ModelManager::LoadModelLocked(const std::string& name) {
  bool serving_old = false;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return absl::UnavailableError("the server is shutting down");
    Entry& entry = entries_[name];
    serving_old = entry.model != nullptr;
    if (!serving_old) {
      entry.state = ModelState::kLoading;
      entry.reason = "loading";
    }
  }
  absl::StatusOr<std::shared_ptr<ServableModel>> built = BuildModel(name);
  std::shared_ptr<const ServableModel> old;
  absl::ReleasableMutexLock lock(&mu_);
  Entry& entry = entries_[name];
  if (!built.ok()) {
    LogError(absl::StrCat("loading model '", name, "' failed: ", built.status().message()));
    if (!serving_old) {
      entry.state = ModelState::kFailed;
      entry.reason = std::string(built.status().message());
    }
    return built.status();
  }
  if (shut_down_) {
    (*built)->Stop(absl::ZeroDuration());
    return absl::UnavailableError("the server is shutting down");
  }
  old = std::move(entry.model);
  entry.model = *std::move(built);
  entry.state = ModelState::kReady;
  entry.reason.clear();
  entry.model->metrics().SetReady(true);
  lock.Release();
  // `old` (if any) is released here, outside mu_: when no request holds it, its destructor
  // drains and joins its batcher.
  old.reset();
  return absl::OkStatus();
}

absl::Status ModelManager::LoadAll() {
  absl::MutexLock load_lock(&load_mu_);
  std::vector<std::string> names;
  if (quick_mode()) {
    names.push_back(options_.quick_model);
  } else {
    names = repository_->ModelNames();
  }
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& name : names) {
      Entry& entry = entries_[name];
      if (entry.model == nullptr) {
        entry.state = ModelState::kLoading;
        entry.reason = "loading";
      }
    }
  }
  std::vector<std::string> failures;
  absl::StatusCode first_code = absl::StatusCode::kOk;
  for (const std::string& name : names) {
    absl::Status status = LoadModelLocked(name);
    if (!status.ok()) {
      if (first_code == absl::StatusCode::kOk) first_code = status.code();
      failures.push_back(absl::StrCat(name, ": ", status.message()));
    }
  }
  if (failures.empty()) return absl::OkStatus();
  return absl::Status(first_code,
                      absl::StrCat(failures.size(), " of ", names.size(),
                                   " model(s) failed to load (the others are served): ",
                                   absl::StrJoin(failures, "; ")));
}

absl::Status ModelManager::Load(std::string_view name) {
  if (quick_mode()) {
    return absl::FailedPreconditionError(
        "models cannot be loaded in quick mode (--model); start with --model_repository");
  }
  absl::MutexLock load_lock(&load_mu_);
  const std::string model(name);
  std::vector<std::string> names = repository_->ModelNames();
  if (std::find(names.begin(), names.end(), model) == names.end()) {
    return absl::NotFoundError(absl::StrCat("no model '", model, "' in repository '",
                                            repository_->root(), "'; available: ",
                                            absl::StrJoin(names, ", ")));
  }
  return LoadModelLocked(model);
}

absl::Status ModelManager::Unload(std::string_view name) {
  absl::MutexLock load_lock(&load_mu_);
  std::shared_ptr<const ServableModel> old;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown model '", std::string(name), "'; known: ", KnownNamesLocked()));
    }
    old = std::move(it->second.model);
    it->second.state = ModelState::kUnavailable;
    it->second.reason = "unloaded";
  }
  if (old != nullptr) {
    old->metrics().SetReady(false);
    old.reset();  // Drains now if no request holds it; otherwise when the last one finishes.
  }
  return absl::OkStatus();
}

std::string ModelManager::KnownNamesLocked() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names.empty() ? std::string("(none)") : absl::StrJoin(names, ", ");
}

absl::StatusOr<std::shared_ptr<const ServableModel>> ModelManager::Get(
    std::string_view name_view) const {
  const std::string name(name_view);
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("the server is shutting down");
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown model '", std::string(name), "'; available: ", KnownNamesLocked()));
  }
  const Entry& entry = it->second;
  switch (entry.state) {
    case ModelState::kReady:
      return entry.model;
    case ModelState::kLoading:
      return absl::UnavailableError(absl::StrCat("model '", name, "' is still loading"));
    case ModelState::kFailed:
      return absl::UnavailableError(
          absl::StrCat("model '", name, "' failed to load: ", entry.reason));
    case ModelState::kUnavailable:
      return absl::UnavailableError(
          absl::StrCat("model '", name, "' is not available (", entry.reason, ")"));
  }
  return absl::InternalError("unreachable model state");
}

std::vector<ModelStatus> ModelManager::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelStatus> result;
  result.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) {
    result.push_back(ModelStatus{name, entry.state, entry.reason});
  }
  return result;
}

bool ModelManager::AllReady() const {
  absl::MutexLock lock(&mu_);
  if (shut_down_ || entries_.empty()) return false;
  bool any_ready = false;
  for (const auto& [name, entry] : entries_) {
    if (entry.state == ModelState::kLoading || entry.state == ModelState::kFailed) return false;
    any_ready |= entry.state == ModelState::kReady;
  }
  return any_ready;
}

void ModelManager::Shutdown(absl::Duration grace) {
  absl::MutexLock load_lock(&load_mu_);
  std::vector<std::shared_ptr<const ServableModel>> models;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& [name, entry] : entries_) {
      if (entry.model != nullptr) models.push_back(std::move(entry.model));
      if (entry.state == ModelState::kReady || entry.state == ModelState::kLoading) {
        entry.state = ModelState::kUnavailable;
        entry.reason = "server shutting down";
      }
    }
  }
  for (const auto& model : models) model->metrics().SetReady(false);
  // Drain in parallel so that every model gets the whole grace period. Holding `models` here
  // keeps an on_done callback from ever dropping the last handle during Stop.
  std::vector<std::thread> stoppers;
  stoppers.reserve(models.size());
  for (const auto& model : models) {
    const ServableModel* raw = model.get();
    stoppers.emplace_back([raw, grace] { raw->Stop(grace); });
  }
  for (std::thread& t : stoppers) t.join();
  models.clear();
}

}  // namespace vitserve
