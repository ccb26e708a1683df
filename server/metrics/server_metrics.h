// Prometheus metrics of the server, named as dashboards and the HPA expect (renaming one means
// updating deploy/ too):
//   vitserve_requests_total{model,task,code}             counter; code: gRPC code name ("OK", ...)
//   vitserve_request_duration_seconds{model,task}        histogram, 100 us .. 10 s
//   vitserve_queue_duration_seconds{model,task}          histogram, 100 us .. 10 s
//   vitserve_preprocess_duration_seconds{model,task}     histogram, 100 us .. 10 s
//   vitserve_compute_duration_seconds{model,task}        histogram, 100 us .. 10 s
//   vitserve_compute_stage_duration_seconds{model,task,stage}  histogram, 100 us .. 10 s; one
//       batch's compute split into stage="input" (copies to the device and device
//       preprocessing), "forward" (the model) and "output" (results back to the host)
//   vitserve_batch_size{model,task}                      histogram, buckets 1, 2, 4, ..., 256
//   vitserve_queue_depth{model,task}                     gauge
//   vitserve_inflight_requests{model,task}               gauge
//   vitserve_model_ready{model,task}                     gauge, 1 ready / 0 not
//   vitserve_gpu_memory_used_bytes{device}               gauge
//   vitserve_executor_idle_polls_total{model,task,outcome}  counter; an idle executor's polls
//       of its queue (--executor-idle-spin-us): outcome="paid" (a request came during it) or
//       "ran_out" (it went to sleep)
// Families are built once, in ServerMetrics' constructor. Each model's labelled children are
// created once (ForModel, at model load), including one requests_total child per gRPC code, so
// the request path only touches cached pointers and never looks labels up.
//
// Ownership: ServerMetrics borrows the registry (created in main, outliving it) and owns the
// ModelMetrics it hands out; references stay valid for the ServerMetrics' lifetime.
// Thread-safety: everything here is thread-safe.
// ModelMetrics maps directly onto a batching BatchObserver: OnQueueDepthChanged -> SetQueueDepth,
// OnTaskDequeued -> ObserveQueue, OnBatchComputed -> ObserveBatchSize + ObserveCompute,
// OnIdlePoll -> CountIdlePoll.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitserve {

// Bucket upper bounds (seconds) of the duration histograms: 100 us to 10 s, 1-2.5-5 steps.
const prometheus::Histogram::BucketBoundaries& DurationBuckets();
// Bucket upper bounds of vitserve_batch_size: 1, 2, 4, ..., 256.
const prometheus::Histogram::BucketBoundaries& BatchSizeBuckets();

class ModelMetrics {
 public:
  ModelMetrics(const ModelMetrics&) = delete;
  ModelMetrics& operator=(const ModelMetrics&) = delete;

  // One finished request: vitserve_requests_total{code} += 1 and its end-to-end duration.
  // Codes outside the gRPC range count as UNKNOWN.
  void RecordRequest(absl::StatusCode code, absl::Duration duration);
  void ObserveQueue(absl::Duration d);
  void ObservePreprocess(absl::Duration d);
  void ObserveCompute(absl::Duration d);
  // One batch's stages, in seconds (vitserve_compute_stage_duration_seconds).
  void ObserveComputeStages(double input_seconds, double forward_seconds, double output_seconds);
  void ObserveBatchSize(int64_t rows);
  void SetQueueDepth(int64_t depth);
  void AddInflight(int64_t delta);
  void SetReady(bool ready);
  // vitserve_executor_idle_polls_total{outcome="paid"|"ran_out"} += 1.
  void CountIdlePoll(bool paid);

  const std::string& model() const { return model_; }
  const std::string& task() const { return task_; }

 private:
  friend class ServerMetrics;
  static constexpr int kNumCodes = 17;  // absl::StatusCode / grpc::StatusCode 0..16.

  ModelMetrics() = default;

  std::string model_;
  std::string task_;
  std::array<prometheus::Counter*, kNumCodes> requests_{};
  prometheus::Histogram* request_duration_ = nullptr;
  prometheus::Histogram* queue_duration_ = nullptr;
  prometheus::Histogram* preprocess_duration_ = nullptr;
  prometheus::Histogram* compute_duration_ = nullptr;
  std::array<prometheus::Histogram*, 3> compute_stages_{};  // input, forward, output
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Gauge* queue_depth_ = nullptr;
  prometheus::Gauge* inflight_ = nullptr;
  prometheus::Gauge* ready_ = nullptr;
  prometheus::Counter* idle_polls_paid_ = nullptr;
  prometheus::Counter* idle_polls_ran_out_ = nullptr;
};

class ServerMetrics {
 public:
  // Registers every vitserve family in `registry`, which must outlive this object.
  explicit ServerMetrics(prometheus::Registry& registry);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The cached children of (model, task), created on the first call (call it at model load).
  // The same reference is returned on every call.
  ModelMetrics& ForModel(const std::string& model, const std::string& task);

  // vitserve_gpu_memory_used_bytes{device}; `device` like "cuda:0".
  void SetGpuMemoryUsed(const std::string& device, double bytes);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& preprocess_duration_;
  prometheus::Family<prometheus::Histogram>& compute_duration_;
  prometheus::Family<prometheus::Histogram>& compute_stage_duration_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& inflight_;
  prometheus::Family<prometheus::Gauge>& ready_;
  prometheus::Family<prometheus::Gauge>& gpu_memory_;
  prometheus::Family<prometheus::Counter>& idle_polls_;

  absl::Mutex mu_;
  absl::flat_hash_map<std::pair<std::string, std::string>, std::unique_ptr<ModelMetrics>> models_
      ABSL_GUARDED_BY(mu_);
};

// The registry's current values in the Prometheus text exposition format 0.0.4.
std::string SerializeMetrics(prometheus::Registry& registry);

// The Content-Type of SerializeMetrics' output, for the /metrics HttpResponse.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace vitserve
