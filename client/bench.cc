#include "client/bench.h"

#include <algorithm>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "client/grpc_status.h"

namespace vitserve::client {
namespace {

// Shared by the driving thread and the completion callbacks; the callbacks hold a shared_ptr,
// so it outlives the last of them.
class BenchState : public std::enable_shared_from_this<BenchState> {
 public:
  BenchState(StartCallFn start_call, bool closed_loop, absl::Time measure_start,
             absl::Time measure_end)
      : start_call_(std::move(start_call)),
        closed_loop_(closed_loop),
        measure_start_(measure_start),
        measure_end_(measure_end) {}

  // Starts one call now.
  void Issue() {
    {
      absl::MutexLock lock(&mu_);
      ++outstanding_;
    }
    StartCounted();
  }

  // Closed loop: no call starts after this.
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }

  void AwaitIdle() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int64_t* outstanding) { return *outstanding == 0; }, &outstanding_));
  }

  struct Interval {
    int64_t requests = 0;  // recorded so far (cumulative)
    int64_t errors = 0;    // cumulative
    int64_t ok = 0;        // in this interval
    std::vector<double> samples_ms;  // in this interval
  };
  Interval TakeInterval() {
    absl::MutexLock lock(&mu_);
    Interval interval;
    interval.requests = result_.requests + result_.warmup_requests;
    interval.errors = result_.errors;
    interval.ok = interval_ok_;
    interval.samples_ms.swap(interval_samples_ms_);
    interval_ok_ = 0;
    return interval;
  }

  // Call after AwaitIdle().
  BenchResult Finish(int images_per_request) {
    absl::MutexLock lock(&mu_);
    BenchResult result = result_;
    result.images = result.ok_requests * images_per_request;
    const absl::Time end = std::max(measure_end_, last_completion_);
    result.elapsed_s = absl::ToDoubleSeconds(end - measure_start_);
    if (result.elapsed_s > 0) {
      result.throughput_req_s = result.ok_requests / result.elapsed_s;
      result.throughput_img_s = result.images / result.elapsed_s;
    }
    result.latency = Summarize(std::move(samples_ms_));
    return result;
  }

 private:
  // Starts a call already counted in outstanding_.
  void StartCounted() {
    const absl::Time started = absl::Now();
    start_call_([self = shared_from_this(), started](absl::Status status) {
      self->OnDone(started, status);
    });
  }

  void OnDone(absl::Time started, const absl::Status& status) {
    const absl::Time now = absl::Now();
    bool again = false;
    {
      absl::MutexLock lock(&mu_);
      if (started < measure_start_) {
        ++result_.warmup_requests;
      } else {
        ++result_.requests;
        last_completion_ = std::max(last_completion_, now);
        if (status.ok()) {
          ++result_.ok_requests;
          ++interval_ok_;
          const double ms = absl::ToDoubleMilliseconds(now - started);
          samples_ms_.push_back(ms);
          interval_samples_ms_.push_back(ms);
        } else {
          ++result_.errors;
          const std::string code = StatusCodeName(status.code());
          if (result_.errors_by_code[code]++ == 0) {
            result_.first_error_by_code[code] = std::string(status.message());
          }
        }
      }
      again = closed_loop_ && !stopped_ && now < measure_end_;
      if (!again) --outstanding_;  // when again, the next call takes this one's slot
    }
    if (again) StartCounted();
  }

  const StartCallFn start_call_;
  const bool closed_loop_;
  const absl::Time measure_start_;
  const absl::Time measure_end_;

  absl::Mutex mu_;
  int64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  BenchResult result_ ABSL_GUARDED_BY(mu_);
  std::vector<double> samples_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<double> interval_samples_ms_ ABSL_GUARDED_BY(mu_);
  int64_t interval_ok_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_completion_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

absl::Status Validate(const BenchOptions& o) {
  if (o.rate < 0) return absl::InvalidArgumentError("--rate must be >= 0");
  if (o.rate == 0 && (o.concurrency < 1 || o.concurrency > 100000)) {
    return absl::InvalidArgumentError("--concurrency must be within 1..100000");
  }
  if (o.rate > 1e6) return absl::InvalidArgumentError("--rate must be at most 1000000");
  if (o.duration <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--duration must be positive");
  }
  if (o.warmup < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--warmup must be >= 0");
  }
  if (o.images_per_request < 1) return absl::InvalidArgumentError("--batch must be >= 1");
  if (o.progress_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("progress interval must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BenchResult> RunBench(StartCallFn start_call, const BenchOptions& options,
                                     std::ostream* progress) {
  if (absl::Status status = Validate(options); !status.ok()) return status;
  const bool closed_loop = options.rate == 0;
  const absl::Time t0 = absl::Now();
  const absl::Time measure_start = t0 + options.warmup;
  const absl::Time end = measure_start + options.duration;
  auto state = std::make_shared<BenchState>(std::move(start_call), closed_loop, measure_start,
                                            end);

  std::mt19937_64 rng(options.seed);
  std::exponential_distribution<double> poisson_gap(closed_loop ? 1.0 : options.rate);
  auto next_gap = [&]() {
    const double seconds = options.arrival == BenchOptions::Arrival::kPoisson
                               ? poisson_gap(rng)
                               : 1.0 / options.rate;
    return absl::Seconds(seconds);
  };

  if (closed_loop) {
    for (int i = 0; i < options.concurrency; ++i) state->Issue();
  }
  absl::Time next_send = t0;
  absl::Time interval_start = t0;
  absl::Time next_progress = t0 + options.progress_interval;
  while (true) {
    const absl::Time now = absl::Now();
    if (now >= end) break;
    if (!closed_loop && next_send <= now) {
      // A pacer that fell behind catches up: the schedule, not the completions, sets the load.
      state->Issue();
      next_send += next_gap();
      continue;
    }
    if (now >= next_progress) {
      BenchState::Interval interval = state->TakeInterval();
      if (progress != nullptr) {
        std::sort(interval.samples_ms.begin(), interval.samples_ms.end());
        const double seconds = absl::ToDoubleSeconds(now - interval_start);
        const bool warming = now < measure_start;
        const absl::Duration phase_elapsed = warming ? now - t0 : now - measure_start;
        const absl::Duration phase_total = warming ? options.warmup : options.duration;
        *progress << absl::StrFormat(
            "[bench] %s%.0fs/%.0fs  %d req  %.1f img/s  p99 %.1f ms  errors %d\n",
            warming ? "warmup " : "", absl::ToDoubleSeconds(phase_elapsed),
            absl::ToDoubleSeconds(phase_total), interval.requests,
            seconds > 0 ? interval.ok * options.images_per_request / seconds : 0.0,
            Percentile(interval.samples_ms, 99), interval.errors);
        progress->flush();
      }
      interval_start = now;
      next_progress += options.progress_interval;
      continue;
    }
    absl::Time wake = std::min(end, next_progress);
    if (!closed_loop) wake = std::min(wake, next_send);
    absl::SleepFor(wake - now);
  }
  state->Stop();
  state->AwaitIdle();
  return state->Finish(options.images_per_request);
}

}  // namespace vitserve::client
