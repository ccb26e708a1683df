// Exact latency percentiles from recorded samples (sorted copy; nearest-rank definition:
// the p-th percentile is the smallest sample with at least p% of samples at or below it).
// Stateless and thread-safe.
#pragma once

#include <cstdint>
#include <vector>

namespace vitserve::client {

struct LatencySummary {
  int64_t count = 0;
  double mean_ms = 0;
  double min_ms = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p95_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// Nearest-rank percentile `p` in [0, 100] of `sorted_ms` (ascending); 0 when empty.
double Percentile(const std::vector<double>& sorted_ms, double p);

// Summary of `samples_ms` (any order); all zeros when empty.
LatencySummary Summarize(std::vector<double> samples_ms);

}  // namespace vitserve::client
