// Per-model dynamic batching policy (a plain struct, filled from the model config) and its
// validation.
//
// Thread-safety: plain value type. Errors: ValidateBatchingOptions returns INVALID_ARGUMENT
// naming the offending field and the allowed range.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace vitserve {

struct BatchingOptions {
  // Most rows in one batch; a single task may not have more rows than this.
  int max_batch_size = 8;
  // How long the oldest queued task may wait for others before its batch is closed anyway.
  // Finite and >= 0 (0: no waiting, run what is there).
  absl::Duration max_queue_delay = absl::Microseconds(1000);
  // A batch closes as soon as a FIFO prefix of the queue has exactly one of these row counts
  // (the largest such prefix is taken). Each in [1, max_batch_size]; order does not matter.
  std::vector<int> preferred_batch_sizes;
  // Most tasks waiting in the queue (not counting batches being computed); beyond it Schedule
  // answers RESOURCE_EXHAUSTED at once.
  int max_queue_size = 256;
  // Deadline applied (from the enqueue time) to tasks that carry none. Positive or infinite.
  absl::Duration default_timeout = absl::InfiniteDuration();
  // true: the queue delay is spent only while more work is announced (DynamicBatcher::
  // AnnounceArrival: requests accepted and still being decoded); with nothing on its way an
  // idle executor runs what is queued at once, so a lone request does not wait for company
  // that cannot come. false: Triton's rule, the oldest task waits up to max_queue_delay.
  bool idle_dispatch = true;
  // How long an executor that finds the queue empty keeps polling it before it sleeps on the
  // queue's condition variable. Waking a sleeping thread costs the next request the kernel's
  // wake-up latency; polling costs the idle executor's CPU for up to this long after a batch.
  // One executor polls at a time, and only while no batch computes (a closed-loop client's next
  // request follows the reply of the batch computing). Only while polls pay: after a poll that
  // ran out, executors sleep at once when idle until a request again arrives within idle_spin
  // of an executor going idle, so requests that trickle in further apart cost no polling.
  // Finite, 0..kMaxIdleSpin (0: sleep at once).
  absl::Duration idle_spin = absl::ZeroDuration();
};

inline constexpr absl::Duration kMaxIdleSpin = absl::Milliseconds(10);

// The poll a model gets when the server is not told one (--executor-idle-spin-us -1, the
// default): kGpuIdleSpin for a model on a GPU, where a lone request's forward pass is a fraction
// of a millisecond and waking a sleeping executor is a visible part of its latency; none on the
// CPU, where the forward pass takes milliseconds and a poll would hold a core the model needs.
inline constexpr absl::Duration kGpuIdleSpin = absl::Microseconds(1000);
absl::Duration ModelIdleSpin(int64_t idle_spin_us, bool on_gpu);

absl::Status ValidateBatchingOptions(const BatchingOptions& options);

}  // namespace vitserve
