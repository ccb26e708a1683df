// FakeClock: a Clock whose time moves only when a test advances it, so batcher timing tests are
// deterministic (no sleeps, no real-time assertions).
//
// Waits never time out on their own: WaitWithDeadline returns only when its condition variable
// is signalled (by the code under test, or by SetTime/AdvanceBy, which wake every waiter) or
// when the fake time is already at or past the deadline. A test synchronises with the threads
// under test by blocking until they wait: BlockUntilWaiters(n) or
// BlockUntilWaiterWithDeadline(t) (e.g. "the executor is now waiting for the queue delay").
//
// Ownership: users borrow the clock; it must outlive them.
// Thread-safety: all methods are thread-safe. SetTime/AdvanceBy lock each waiter's mutex briefly
// to deliver the wake-up without a lost-signal race, so they must not be called while holding
// a mutex that a waiter waits with (tests call them from the test thread).
#pragma once

#include <cstdint>
#include <list>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batching/clock.h"

namespace vitserve {

class FakeClock final : public Clock {
 public:
  // Starts at an arbitrary fixed time (not the epoch, so "time - duration" stays meaningful).
  FakeClock();
  explicit FakeClock(absl::Time start);

  absl::Time Now() override;
  void WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);

  // Moves time (never backwards: an earlier time is ignored) and wakes every waiter.
  void SetTime(absl::Time time);
  void AdvanceBy(absl::Duration duration);

  // Blocks until at least `n` threads are inside WaitWithDeadline. Returns false if that did not
  // happen within `real_timeout` of real time (a safety net so a broken test fails, not hangs).
  bool BlockUntilWaiters(int n, absl::Duration real_timeout = absl::Seconds(60));
  // Blocks until some thread is inside WaitWithDeadline with exactly `deadline`; false after
  // `real_timeout` of real time.
  bool BlockUntilWaiterWithDeadline(absl::Time deadline,
                                    absl::Duration real_timeout = absl::Seconds(60));
  // Threads inside WaitWithDeadline now.
  int NumWaiters();

 private:
  struct Waiter {
    absl::CondVar* cv;
    absl::Mutex* mu;
    absl::Time deadline;
  };

  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vitserve
