#include "client/latency_stats.h"

#include <vector>

#include "gtest/gtest.h"

namespace vitserve::client {
namespace {

TEST(LatencyStatsTest, NearestRankOnOneToHundred) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);  // unsorted input
  LatencySummary s = Summarize(samples);
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.min_ms, 1);
  EXPECT_DOUBLE_EQ(s.p50_ms, 50);
  EXPECT_DOUBLE_EQ(s.p90_ms, 90);
  EXPECT_DOUBLE_EQ(s.p95_ms, 95);
  EXPECT_DOUBLE_EQ(s.p99_ms, 99);
  EXPECT_DOUBLE_EQ(s.max_ms, 100);
  EXPECT_DOUBLE_EQ(s.mean_ms, 50.5);
}

TEST(LatencyStatsTest, SmallSamples) {
  EXPECT_DOUBLE_EQ(Percentile({7}, 0), 7);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  // Nearest rank of 10 samples: p50 -> 5th, p90 -> 9th, p91 -> 10th.
  std::vector<double> ten = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_DOUBLE_EQ(Percentile(ten, 50), 5);
  EXPECT_DOUBLE_EQ(Percentile(ten, 90), 9);
  EXPECT_DOUBLE_EQ(Percentile(ten, 91), 10);
  EXPECT_DOUBLE_EQ(Percentile(ten, 100), 10);
}

TEST(LatencyStatsTest, EmptyIsZero) {
  LatencySummary s = Summarize({});
  EXPECT_EQ(s.count, 0);
  EXPECT_DOUBLE_EQ(s.p99_ms, 0);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
}

}  // namespace
}  // namespace vitserve::client
