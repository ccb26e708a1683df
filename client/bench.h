// Load generator of `vitserve-client bench`, comparable with Triton's perf_analyzer:
//   closed loop: `concurrency` calls outstanding at all times, each next one started when one
//                completes (the completion callback starts it; no thread per request);
//   open loop:   `rate` calls per second started on a fixed or Poisson schedule whatever the
//                completions; late responses are still waited for and counted.
// Calls started during the warm-up are not recorded. Calls started in the measured window are
// all waited for (each call carries the client's deadline) and counted, OK or not. Latency is
// measured from a call's start to its completion, over successful calls only.
//
// Calls are issued through a StartCallFn, so the generator knows nothing about the RPC; see
// MakeStartCall() in client/commands.h for the vitserve ones.
// Thread-safety: RunBench blocks the calling thread; completions run on gRPC's threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/latency_stats.h"

namespace vitserve::client {

// Starts one call and returns at once; the callback receives the call's status, once.
using StartCallFn = std::function<void(std::function<void(absl::Status)>)>;

struct BenchOptions {
  enum class Arrival { kConstant, kPoisson };

  // Closed loop: calls kept outstanding. Used when rate == 0.
  int concurrency = 1;
  // Open loop: calls started per second; > 0 selects the open loop.
  double rate = 0;
  Arrival arrival = Arrival::kConstant;
  absl::Duration duration = absl::Seconds(10);
  absl::Duration warmup = absl::ZeroDuration();
  // Images in each request, for img/s.
  int images_per_request = 1;
  // Seed of the Poisson schedule.
  uint64_t seed = 1;
  absl::Duration progress_interval = absl::Seconds(1);
};

struct BenchResult {
  // Calls started in the measured window and completed (OK or failed).
  int64_t requests = 0;
  int64_t ok_requests = 0;
  int64_t images = 0;  // ok_requests * images_per_request
  int64_t errors = 0;
  std::map<std::string, int64_t> errors_by_code;        // "UNAVAILABLE" -> count
  std::map<std::string, std::string> first_error_by_code;  // an example message per code
  int64_t warmup_requests = 0;
  // The measured window, stretched to the last recorded completion.
  double elapsed_s = 0;
  double throughput_req_s = 0;  // successful requests per second
  double throughput_img_s = 0;
  LatencySummary latency;  // of successful requests
};

// INVALID_ARGUMENT for inconsistent options; otherwise runs for warmup + duration (plus the
// time outstanding calls need to finish) and returns the counts. Progress lines go to
// `progress` every progress_interval when it is not null.
absl::StatusOr<BenchResult> RunBench(StartCallFn start_call, const BenchOptions& options,
                                     std::ostream* progress);

}  // namespace vitserve::client
