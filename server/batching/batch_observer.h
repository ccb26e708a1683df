// Hooks through which the DynamicBatcher reports what it does (the server connects them to
// ModelMetrics). Every hook has an empty default, so an observer overrides only what it needs.
//
// Ownership: the batcher does not own its observer; it must outlive the batcher.
// Thread-safety: hooks may be called concurrently from several batcher threads and from callers
// of Schedule/Stop. OnQueueDepthChanged (so that depths arrive in order) and OnIdlePoll (so that
// a poll Stop ended is told apart) are called with the batcher's queue lock held: they must be
// cheap (a gauge set, a counter increment) and must not call back into the batcher.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace vitserve {

class BatchObserver {
 public:
  virtual ~BatchObserver() = default;
  // Tasks waiting in the queue, after each change.
  virtual void OnQueueDepthChanged(int64_t depth) {}
  // A task left the queue for a batch, after waiting `queue_time`.
  virtual void OnTaskDequeued(absl::Duration queue_time) {}
  // A batch finished: `batch_rows` rows, wall time on the batcher's clock (a runner's call, or
  // a launcher's launch to its completion, which includes waiting for the batch in flight
  // before it), its status (OK, the runner's error, or INTERNAL for a bad output).
  virtual void OnBatchComputed(int64_t batch_rows, absl::Duration compute_time,
                               const absl::Status& status) {}
  // A task was failed without being computed: DEADLINE_EXCEEDED, CANCELLED, or UNAVAILABLE when
  // the shutdown grace period ran out before it ran.
  virtual void OnTaskDropped(const absl::Status& reason) {}
  // An idle executor's poll of the queue (BatchingOptions::idle_spin) ended: `paid` when a
  // request arrived during it, false when it ran out and the executor went to sleep. A poll
  // that Stop ended with nothing queued is not reported.
  virtual void OnIdlePoll(bool paid) {}
};

}  // namespace vitserve
