#include "client/bench.h"

#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "client/commands.h"
#include "absl/synchronization/mutex.h"
#include "client/vision_client.h"
#include "gtest/gtest.h"
#include "tests/unit/client/fake_vision_server.h"

namespace vitserve::client {
namespace {

TEST(BenchTest, ClosedLoopCountsRequestsAndErrors) {
  testing::FakeServer server;
  server.vision.fail_every = 7;
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok());
  CliOptions cli;
  cli.model = "shvit_s1";
  cli.batch = 2;
  auto workload = MakeBenchWorkload(**client, cli);
  ASSERT_TRUE(workload.ok()) << workload.status();
  EXPECT_EQ(workload->rpc, "Classify");
  EXPECT_EQ(workload->input, "raw");

  BenchOptions options;
  options.concurrency = 4;
  options.duration = absl::Seconds(1);
  options.images_per_request = 2;
  absl::StatusOr<BenchResult> result = RunBench(workload->start_call, options, nullptr);
  ASSERT_TRUE(result.ok()) << result.status();

  // No warm-up, and RunBench waits for every call: the server saw exactly what was counted.
  EXPECT_GT(result->requests, 0);
  EXPECT_EQ(result->requests, server.vision.classify_calls.load());
  EXPECT_EQ(result->requests, result->ok_requests + result->errors);
  EXPECT_EQ(result->errors, server.vision.classify_failures.load());
  EXPECT_EQ(result->errors, result->requests / 7);
  if (result->errors > 0) {
    EXPECT_EQ(result->errors_by_code.at("RESOURCE_EXHAUSTED"), result->errors);
    EXPECT_EQ(result->first_error_by_code.at("RESOURCE_EXHAUSTED"), "queue full (fake)");
  }
  EXPECT_EQ(result->images, 2 * result->ok_requests);
  EXPECT_EQ(result->latency.count, result->ok_requests);
  EXPECT_LE(result->latency.p50_ms, result->latency.p99_ms);
  EXPECT_LE(result->latency.p99_ms, result->latency.max_ms);
  EXPECT_GE(result->elapsed_s, 1.0);
  EXPECT_NEAR(result->throughput_req_s, result->ok_requests / result->elapsed_s, 1e-6);

  absl::MutexLock lock(&server.vision.mu);
  EXPECT_EQ(server.vision.last_classify.images_size(), 2);
  EXPECT_EQ(server.vision.last_classify.images(0).raw().width(), 32u);  // model input size
}

TEST(BenchTest, ClosedLoopKeepsConcurrencyOutstanding) {
  // A fake StartCallFn completing on another thread; counts the maximum outstanding.
  std::atomic<int> outstanding{0};
  std::atomic<int> max_outstanding{0};
  std::atomic<int64_t> started{0};
  StartCallFn start = [&](std::function<void(absl::Status)> done) {
    ++started;
    const int now = ++outstanding;
    int seen = max_outstanding.load();
    while (now > seen && !max_outstanding.compare_exchange_weak(seen, now)) {
    }
    std::thread([&outstanding, done = std::move(done)] {
      absl::SleepFor(absl::Milliseconds(2));
      --outstanding;
      done(absl::OkStatus());
    }).detach();
  };
  BenchOptions options;
  options.concurrency = 3;
  options.duration = absl::Milliseconds(300);
  absl::StatusOr<BenchResult> result = RunBench(start, options, nullptr);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->requests, started.load());
  EXPECT_EQ(max_outstanding.load(), 3);
  EXPECT_EQ(outstanding.load(), 0);
}

TEST(BenchTest, WarmupCallsAreNotRecorded) {
  std::atomic<int64_t> started{0};
  StartCallFn start = [&](std::function<void(absl::Status)> done) {
    ++started;
    std::thread([done = std::move(done)] {
      absl::SleepFor(absl::Milliseconds(5));
      done(absl::OkStatus());
    }).detach();
  };
  BenchOptions options;
  options.concurrency = 1;
  options.duration = absl::Milliseconds(200);
  options.warmup = absl::Milliseconds(200);
  absl::StatusOr<BenchResult> result = RunBench(start, options, nullptr);
  ASSERT_TRUE(result.ok());
  EXPECT_GT(result->warmup_requests, 0);
  EXPECT_EQ(result->requests + result->warmup_requests, started.load());
}

TEST(BenchTest, OpenLoopFiresAboutRateTimesDuration) {
  testing::FakeServer server;
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok());
  CliOptions cli;
  cli.model = "shvit_s1";
  auto workload = MakeBenchWorkload(**client, cli);
  ASSERT_TRUE(workload.ok());
  BenchOptions options;
  options.rate = 200;
  options.duration = absl::Seconds(1);
  absl::StatusOr<BenchResult> result = RunBench(workload->start_call, options, nullptr);
  ASSERT_TRUE(result.ok());
  // A fixed 5 ms interval over 1 s: 200 calls (the pacer catches up if it oversleeps).
  EXPECT_GE(result->requests, 150);
  EXPECT_LE(result->requests, 210);
  EXPECT_EQ(result->requests, server.vision.classify_calls.load());
  EXPECT_EQ(result->errors, 0);
}

TEST(BenchTest, PoissonOpenLoopIsOnRateWithExponentialGaps) {
  absl::Mutex mu;
  std::vector<absl::Time> starts;
  StartCallFn start = [&](std::function<void(absl::Status)> done) {
    {
      absl::MutexLock lock(&mu);
      starts.push_back(absl::Now());
    }
    done(absl::OkStatus());  // completes inline
  };
  BenchOptions options;
  options.rate = 500;
  options.arrival = BenchOptions::Arrival::kPoisson;
  options.duration = absl::Milliseconds(500);
  absl::StatusOr<BenchResult> result = RunBench(start, options, nullptr);
  ASSERT_TRUE(result.ok());
  absl::MutexLock lock(&mu);
  EXPECT_EQ(result->requests, static_cast<int64_t>(starts.size()));
  EXPECT_GE(result->requests, 150);  // expectation 250, standard deviation ~16
  EXPECT_LE(result->requests, 350);
  // What makes it Poisson: exponential gaps have a coefficient of variation (stddev / mean) of
  // 1, a fixed-interval pacer about 0 (sleeping late only adds variation, never removes it).
  // With ~250 gaps the estimate's spread is ~0.1, so 0.6 cannot be reached by a fixed pacer
  // and is missed by a Poisson one with probability far below 1e-4.
  std::vector<double> gaps;
  for (size_t i = 1; i < starts.size(); ++i) {
    gaps.push_back(absl::ToDoubleSeconds(starts[i] - starts[i - 1]));
  }
  ASSERT_GT(gaps.size(), 100u);
  double mean = 0;
  for (double g : gaps) mean += g;
  mean /= gaps.size();
  double variance = 0;
  for (double g : gaps) variance += (g - mean) * (g - mean);
  variance /= gaps.size() - 1;
  EXPECT_GT(std::sqrt(variance) / mean, 0.6) << "gaps look fixed, not exponential";
}

TEST(BenchTest, TensorWorkloadUsesModelMetadata) {
  testing::FakeServer server;
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok());
  CliOptions cli;
  cli.model = "shvit_s1";
  cli.input = "tensor";
  cli.batch = 4;
  auto workload = MakeBenchWorkload(**client, cli);
  ASSERT_TRUE(workload.ok()) << workload.status();
  EXPECT_EQ(workload->rpc, "ModelInfer");
  std::atomic<bool> finished{false};
  absl::Status status;
  workload->start_call([&](absl::Status s) {
    status = s;
    finished = true;
  });
  while (!finished) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(status.ok()) << status;
  absl::MutexLock lock(&server.inference.mu);
  const auto& sent = server.inference.last_infer;
  ASSERT_EQ(sent.inputs_size(), 1);
  EXPECT_EQ(sent.inputs(0).name(), "pixel_values");
  EXPECT_EQ(std::vector<int64_t>(sent.inputs(0).shape().begin(), sent.inputs(0).shape().end()),
            (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_EQ(sent.raw_input_contents(0).size(), 4u * 3 * 8 * 8 * 4);
}

// The raw workload serialises its request once; every call still delivers the whole request,
// and calls may run at once.
TEST(BenchTest, RawClassifyWorkloadSendsTheWholeRequestEveryCall) {
  testing::FakeServer server;
  auto client = VisionClient::Connect(server.address());
  ASSERT_TRUE(client.ok());
  CliOptions cli;
  cli.model = "shvit_s1";
  cli.input = "raw";
  cli.batch = 2;
  cli.top_k = 3;
  auto workload = MakeBenchWorkload(**client, cli);
  ASSERT_TRUE(workload.ok()) << workload.status();
  EXPECT_EQ(workload->rpc, "Classify");
  constexpr int kCalls = 4;
  std::atomic<int> finished{0};
  std::atomic<int> failed{0};
  for (int i = 0; i < kCalls; ++i) {
    workload->start_call([&](absl::Status s) {
      if (!s.ok()) ++failed;
      ++finished;
    });
  }
  while (finished < kCalls) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(server.vision.classify_calls.load(), kCalls);
  absl::MutexLock lock(&server.vision.mu);
  const v1::ClassifyRequest& sent = server.vision.last_classify;
  EXPECT_EQ(sent.model(), "shvit_s1");
  EXPECT_EQ(sent.top_k(), 3u);
  ASSERT_EQ(sent.images_size(), 2);
  for (const v1::Image& image : sent.images()) {
    ASSERT_TRUE(image.has_raw());
    EXPECT_EQ(image.raw().rgb8().size(), size_t{image.raw().width()} * image.raw().height() * 3);
    EXPECT_GT(image.raw().width(), 0u);
  }
}

TEST(BenchTest, RejectsBadOptions) {
  StartCallFn start = [](std::function<void(absl::Status)> done) { done(absl::OkStatus()); };
  BenchOptions options;
  options.concurrency = 0;
  EXPECT_EQ(RunBench(start, options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.concurrency = 1;
  options.duration = absl::ZeroDuration();
  EXPECT_EQ(RunBench(start, options, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vitserve::client
