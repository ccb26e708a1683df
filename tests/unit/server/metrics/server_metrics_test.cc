#include "server/metrics/server_metrics.h"

#include <prometheus/registry.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

using ::testing::HasSubstr;

// The value of the exposition line whose series (name and labels) is exactly `series`, or NaN.
double Value(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  ADD_FAILURE() << "no series " << series << " in:\n" << text;
  return std::nan("");
}

constexpr char kLabels[] = R"(model="shvit_s1",task="classification")";

std::string Series(const std::string& name, const std::string& extra = "") {
  return absl::StrCat(name, "{", extra.empty() ? "" : extra + ",", kLabels, "}");
}

TEST(ServerMetricsTest, ExposesEveryFamilyWithTypeAndLabels) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  ModelMetrics& model = metrics.ForModel("shvit_s1", "classification");
  model.RecordRequest(absl::StatusCode::kOk, absl::Milliseconds(12));
  model.RecordRequest(absl::StatusCode::kInvalidArgument, absl::Milliseconds(1));
  model.ObserveQueue(absl::Microseconds(300));
  model.ObservePreprocess(absl::Milliseconds(2));
  model.ObserveCompute(absl::Milliseconds(7));
  model.ObserveBatchSize(4);
  model.SetQueueDepth(5);
  model.AddInflight(3);
  model.AddInflight(-1);
  model.SetReady(true);
  metrics.SetGpuMemoryUsed("cuda:0", 1.5e9);
  model.CountIdlePoll(/*paid=*/true);
  model.CountIdlePoll(/*paid=*/false);
  model.CountIdlePoll(/*paid=*/false);

  const std::string text = SerializeMetrics(registry);
  const std::vector<std::pair<std::string, std::string>> types = {
      {"vitserve_requests_total", "counter"},
      {"vitserve_request_duration_seconds", "histogram"},
      {"vitserve_queue_duration_seconds", "histogram"},
      {"vitserve_preprocess_duration_seconds", "histogram"},
      {"vitserve_compute_duration_seconds", "histogram"},
      {"vitserve_batch_size", "histogram"},
      {"vitserve_queue_depth", "gauge"},
      {"vitserve_inflight_requests", "gauge"},
      {"vitserve_model_ready", "gauge"},
      {"vitserve_gpu_memory_used_bytes", "gauge"},
      {"vitserve_executor_idle_polls_total", "counter"},
  };
  for (const auto& [name, type] : types) {
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# TYPE ", name, " ", type, "\n")));
    EXPECT_THAT(text, HasSubstr(absl::StrCat("# HELP ", name, " ")));
  }
  EXPECT_EQ(Value(text, Series("vitserve_requests_total", R"(code="OK")")), 1);
  EXPECT_EQ(Value(text, Series("vitserve_requests_total", R"(code="INVALID_ARGUMENT")")), 1);
  EXPECT_EQ(Value(text, Series("vitserve_request_duration_seconds_count")), 2);
  EXPECT_NEAR(Value(text, Series("vitserve_request_duration_seconds_sum")), 0.013, 1e-9);
  EXPECT_EQ(Value(text, Series("vitserve_queue_duration_seconds_count")), 1);
  EXPECT_EQ(Value(text, Series("vitserve_preprocess_duration_seconds_count")), 1);
  EXPECT_EQ(Value(text, Series("vitserve_compute_duration_seconds_count")), 1);
  EXPECT_EQ(Value(text, Series("vitserve_batch_size_count")), 1);
  EXPECT_EQ(Value(text, Series("vitserve_queue_depth")), 5);
  EXPECT_EQ(Value(text, Series("vitserve_inflight_requests")), 2);
  EXPECT_EQ(Value(text, Series("vitserve_model_ready")), 1);
  EXPECT_EQ(Value(text, R"(vitserve_gpu_memory_used_bytes{device="cuda:0"})"), 1.5e9);
  // prometheus-cpp writes labels in name order: outcome between model and task.
  EXPECT_EQ(Value(text, R"(vitserve_executor_idle_polls_total{model="shvit_s1",outcome="paid",)"
                        R"(task="classification"})"),
            1);
  EXPECT_EQ(Value(text, R"(vitserve_executor_idle_polls_total{model="shvit_s1",outcome="ran_out",)"
                        R"(task="classification"})"),
            2);
}

TEST(ServerMetricsTest, PrecreatesRequestCounterForEveryCode) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  metrics.ForModel("shvit_s1", "classification");
  const std::string text = SerializeMetrics(registry);
  for (const char* code : {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                           "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                           "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                           "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}) {
    EXPECT_EQ(Value(text, Series("vitserve_requests_total", absl::StrCat("code=\"", code, "\""))),
              0)
        << code;
  }
  EXPECT_EQ(Value(text, Series("vitserve_model_ready")), 0);
}

TEST(ServerMetricsTest, HistogramBucketsCountObservations) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  ModelMetrics& model = metrics.ForModel("shvit_s1", "classification");
  model.ObserveBatchSize(3);
  model.ObserveBatchSize(3);
  model.ObserveBatchSize(8);
  model.ObserveBatchSize(300);
  model.ObserveCompute(absl::Milliseconds(2));
  model.ObserveCompute(absl::Seconds(20));
  const std::string text = SerializeMetrics(registry);
  const auto bucket = [&](const std::string& name, const std::string& le) {
    return Value(text, absl::StrCat(name, "_bucket{", kLabels, ",le=\"", le, "\"}"));
  };
  EXPECT_EQ(bucket("vitserve_batch_size", "1"), 0);
  EXPECT_EQ(bucket("vitserve_batch_size", "2"), 0);
  EXPECT_EQ(bucket("vitserve_batch_size", "4"), 2);
  EXPECT_EQ(bucket("vitserve_batch_size", "8"), 3);
  EXPECT_EQ(bucket("vitserve_batch_size", "256"), 3);
  EXPECT_EQ(bucket("vitserve_batch_size", "+Inf"), 4);
  EXPECT_EQ(Value(text, Series("vitserve_batch_size_sum")), 314);
  EXPECT_EQ(bucket("vitserve_compute_duration_seconds", "0.0001"), 0);
  EXPECT_EQ(bucket("vitserve_compute_duration_seconds", "0.001"), 0);
  EXPECT_EQ(bucket("vitserve_compute_duration_seconds", "0.0025"), 1);
  EXPECT_EQ(bucket("vitserve_compute_duration_seconds", "10"), 1);
  EXPECT_EQ(bucket("vitserve_compute_duration_seconds", "+Inf"), 2);
}

TEST(ServerMetricsTest, ForModelReturnsTheCachedChildren) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  ModelMetrics& a = metrics.ForModel("shvit_s1", "classification");
  ModelMetrics& again = metrics.ForModel("shvit_s1", "classification");
  ModelMetrics& other = metrics.ForModel("vit_b16", "classification");
  EXPECT_EQ(&a, &again);
  EXPECT_NE(&a, &other);
  EXPECT_EQ(a.model(), "shvit_s1");
  EXPECT_EQ(a.task(), "classification");
  a.RecordRequest(absl::StatusCode::kOk, absl::Milliseconds(1));
  again.RecordRequest(absl::StatusCode::kOk, absl::Milliseconds(1));
  const std::string text = SerializeMetrics(registry);
  EXPECT_EQ(Value(text, Series("vitserve_requests_total", R"(code="OK")")), 2);
  EXPECT_EQ(
      Value(text, R"(vitserve_requests_total{code="OK",model="vit_b16",task="classification"})"),
      0);
}

TEST(ServerMetricsTest, IsThreadSafe) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&metrics] {
      for (int i = 0; i < 1000; ++i) {
        ModelMetrics& m = metrics.ForModel("shvit_s1", "classification");
        m.RecordRequest(absl::StatusCode::kOk, absl::Microseconds(50));
        m.AddInflight(1);
        m.AddInflight(-1);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const std::string text = SerializeMetrics(registry);
  EXPECT_EQ(Value(text, Series("vitserve_requests_total", R"(code="OK")")), 8000);
  EXPECT_EQ(Value(text, Series("vitserve_request_duration_seconds_count")), 8000);
  EXPECT_EQ(Value(text, Series("vitserve_inflight_requests")), 0);
}

TEST(ServerMetricsTest, UnknownCodesCountAsUnknown) {
  prometheus::Registry registry;
  ServerMetrics metrics(registry);
  ModelMetrics& m = metrics.ForModel("shvit_s1", "classification");
  m.RecordRequest(static_cast<absl::StatusCode>(99), absl::Milliseconds(1));
  EXPECT_EQ(
      Value(SerializeMetrics(registry), Series("vitserve_requests_total", R"(code="UNKNOWN")")), 1);
}

}  // namespace
}  // namespace vitserve
