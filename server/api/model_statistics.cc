#include "server/api/model_statistics.h"

namespace vitserve {
namespace {

void Fill(const DurationStat& in, inference::StatisticDuration* out) {
  out->set_count(in.count);
  out->set_ns(in.ns);
}

}  // namespace

void FillModelStatistics(const std::string& name, const std::string& version,
                         const ModelStatisticsSnapshot& snapshot, inference::ModelStatistics* out) {
  out->set_name(name);
  out->set_version(version);
  out->set_last_inference(snapshot.last_inference_ms);
  out->set_inference_count(snapshot.inference_count);
  out->set_execution_count(snapshot.execution_count);
  inference::InferStatistics* stats = out->mutable_inference_stats();
  Fill(snapshot.success, stats->mutable_success());
  Fill(snapshot.fail, stats->mutable_fail());
  Fill(snapshot.queue, stats->mutable_queue());
  Fill(snapshot.compute_infer, stats->mutable_compute_infer());
  // Input copies and output conversion are inside the runner's wall time; reported as zero
  // with the execution count so perf_analyzer's averages stay defined.
  stats->mutable_compute_input()->set_count(snapshot.compute_infer.count);
  stats->mutable_compute_output()->set_count(snapshot.compute_infer.count);
  for (const BatchSizeStat& batch : snapshot.batch_stats) {
    inference::InferBatchStatistics* b = out->add_batch_stats();
    b->set_batch_size(batch.batch_size);
    Fill(batch.compute_infer, b->mutable_compute_infer());
    b->mutable_compute_input()->set_count(batch.compute_infer.count);
    b->mutable_compute_output()->set_count(batch.compute_infer.count);
  }
}

void FillModelStatistics(const ServableModel& model, const std::string& version,
                         inference::ModelStatistics* out) {
  FillModelStatistics(model.name(), version, model.Statistics(), out);
}

}  // namespace vitserve
