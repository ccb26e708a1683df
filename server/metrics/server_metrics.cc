#include "server/metrics/server_metrics.h"

#include <prometheus/text_serializer.h>

namespace vitserve {

const prometheus::Histogram::BucketBoundaries& DurationBuckets() {
  static const auto* const kBuckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0};
  return *kBuckets;
}

const prometheus::Histogram::BucketBoundaries& BatchSizeBuckets() {
  static const auto* const kBuckets =
      new prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *kBuckets;
}

void ModelMetrics::RecordRequest(absl::StatusCode code, absl::Duration duration) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= kNumCodes) index = static_cast<int>(absl::StatusCode::kUnknown);
  requests_[index]->Increment();
  request_duration_->Observe(absl::ToDoubleSeconds(duration));
}

void ModelMetrics::ObserveQueue(absl::Duration d) {
  queue_duration_->Observe(absl::ToDoubleSeconds(d));
}

void ModelMetrics::ObservePreprocess(absl::Duration d) {
  preprocess_duration_->Observe(absl::ToDoubleSeconds(d));
}

void ModelMetrics::ObserveCompute(absl::Duration d) {
  compute_duration_->Observe(absl::ToDoubleSeconds(d));
}

void ModelMetrics::ObserveComputeStages(double input_seconds, double forward_seconds,
                                        double output_seconds) {
  compute_stages_[0]->Observe(input_seconds);
  compute_stages_[1]->Observe(forward_seconds);
  compute_stages_[2]->Observe(output_seconds);
}

void ModelMetrics::ObserveBatchSize(int64_t rows) {
  batch_size_->Observe(static_cast<double>(rows));
}

void ModelMetrics::SetQueueDepth(int64_t depth) { queue_depth_->Set(static_cast<double>(depth)); }

void ModelMetrics::AddInflight(int64_t delta) {
  if (delta >= 0) {
    inflight_->Increment(static_cast<double>(delta));
  } else {
    inflight_->Decrement(static_cast<double>(-delta));
  }
}

void ModelMetrics::SetReady(bool ready) { ready_->Set(ready ? 1.0 : 0.0); }

void ModelMetrics::CountIdlePoll(bool paid) {
  (paid ? idle_polls_paid_ : idle_polls_ran_out_)->Increment();
}

ServerMetrics::ServerMetrics(prometheus::Registry& registry)
    : requests_(prometheus::BuildCounter()
                    .Name("vitserve_requests_total")
                    .Help("Requests finished, by model, task and gRPC status code.")
                    .Register(registry)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("vitserve_request_duration_seconds")
                            .Help("End-to-end request latency in the server, in seconds.")
                            .Register(registry)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("vitserve_queue_duration_seconds")
                          .Help("Time a request waited in the batching queue, in seconds.")
                          .Register(registry)),
      preprocess_duration_(prometheus::BuildHistogram()
                               .Name("vitserve_preprocess_duration_seconds")
                               .Help("Image decode and preprocessing time, in seconds.")
                               .Register(registry)),
      compute_duration_(
          prometheus::BuildHistogram()
              .Name("vitserve_compute_duration_seconds")
              .Help("Model execution time of one batch, in seconds: from its launch to its "
                    "output on the host (on CUDA this includes waiting for the batch launched "
                    "before it).")
              .Register(registry)),
      compute_stage_duration_(
          prometheus::BuildHistogram()
              .Name("vitserve_compute_stage_duration_seconds")
              .Help("One batch's execution by stage, in seconds: input (copies to the device "
                    "and device preprocessing), forward (the model), output (results back to "
                    "the host).")
              .Register(registry)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("vitserve_batch_size")
                      .Help("Rows (images) per executed batch.")
                      .Register(registry)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("vitserve_queue_depth")
                       .Help("Requests waiting in the batching queue.")
                       .Register(registry)),
      inflight_(prometheus::BuildGauge()
                    .Name("vitserve_inflight_requests")
                    .Help("Requests being handled: received and not yet answered.")
                    .Register(registry)),
      ready_(prometheus::BuildGauge()
                 .Name("vitserve_model_ready")
                 .Help("1 when the model is loaded and serving, else 0.")
                 .Register(registry)),
      gpu_memory_(prometheus::BuildGauge()
                      .Name("vitserve_gpu_memory_used_bytes")
                      .Help("GPU memory held by the server, in bytes.")
                      .Register(registry)),
      idle_polls_(prometheus::BuildCounter()
                      .Name("vitserve_executor_idle_polls_total")
                      .Help("Idle executors' polls of their queue (--executor-idle-spin-us), by "
                            "outcome: paid (a request arrived during the poll) or ran_out (the "
                            "executor went to sleep).")
                      .Register(registry)) {}

ModelMetrics& ServerMetrics::ForModel(const std::string& model, const std::string& task) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<ModelMetrics>& slot = models_[std::make_pair(model, task)];
  if (slot != nullptr) return *slot;

  slot.reset(new ModelMetrics());
  ModelMetrics& m = *slot;
  m.model_ = model;
  m.task_ = task;
  const prometheus::Labels labels = {{"model", model}, {"task", task}};
  for (int code = 0; code < ModelMetrics::kNumCodes; ++code) {
    prometheus::Labels with_code = labels;
    with_code["code"] = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
    m.requests_[code] = &requests_.Add(with_code);
  }
  m.request_duration_ = &request_duration_.Add(labels, DurationBuckets());
  m.queue_duration_ = &queue_duration_.Add(labels, DurationBuckets());
  m.preprocess_duration_ = &preprocess_duration_.Add(labels, DurationBuckets());
  m.compute_duration_ = &compute_duration_.Add(labels, DurationBuckets());
  const char* const stages[] = {"input", "forward", "output"};
  for (size_t i = 0; i < m.compute_stages_.size(); ++i) {
    prometheus::Labels with_stage = labels;
    with_stage["stage"] = stages[i];
    m.compute_stages_[i] = &compute_stage_duration_.Add(with_stage, DurationBuckets());
  }
  m.batch_size_ = &batch_size_.Add(labels, BatchSizeBuckets());
  m.queue_depth_ = &queue_depth_.Add(labels);
  m.inflight_ = &inflight_.Add(labels);
  m.ready_ = &ready_.Add(labels);
  prometheus::Labels paid = labels, ran_out = labels;
  paid["outcome"] = "paid";
  ran_out["outcome"] = "ran_out";
  m.idle_polls_paid_ = &idle_polls_.Add(paid);
  m.idle_polls_ran_out_ = &idle_polls_.Add(ran_out);
  return m;
}

void ServerMetrics::SetGpuMemoryUsed(const std::string& device, double bytes) {
  // Not a hot path (a periodic poll), so the label lookup is fine here.
  gpu_memory_.Add({{"device", device}}).Set(bytes);
}

std::string SerializeMetrics(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

}  // namespace vitserve
