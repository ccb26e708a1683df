#include "client/latency_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace vitserve::client {

double Percentile(const std::vector<double>& sorted_ms, double p) {
  if (sorted_ms.empty()) return 0;
  const double n = static_cast<double>(sorted_ms.size());
  const double rank = std::ceil(std::clamp(p, 0.0, 100.0) / 100.0 * n);
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted_ms[std::min(index, sorted_ms.size() - 1)];
}

LatencySummary Summarize(std::vector<double> samples_ms) {
  LatencySummary s;
  if (samples_ms.empty()) return s;
  std::sort(samples_ms.begin(), samples_ms.end());
  s.count = static_cast<int64_t>(samples_ms.size());
  s.mean_ms = std::accumulate(samples_ms.begin(), samples_ms.end(), 0.0) / samples_ms.size();
  s.min_ms = samples_ms.front();
  s.p50_ms = Percentile(samples_ms, 50);
  s.p90_ms = Percentile(samples_ms, 90);
  s.p95_ms = Percentile(samples_ms, 95);
  s.p99_ms = Percentile(samples_ms, 99);
  s.max_ms = samples_ms.back();
  return s;
}

}  // namespace vitserve::client
