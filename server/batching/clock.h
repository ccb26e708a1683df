// Time source for the batcher, injectable so timeout tests are deterministic.
//
// Production code uses RealClock; tests use FakeClock (tests/test_util/fake_clock.h), whose time
// moves only when the test advances it.
//
// Ownership: a Clock is passed by raw pointer and must outlive every object that uses it.
// Thread-safety: implementations are thread-safe.
#pragma once

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace vitserve {

class Clock {
 public:
  virtual ~Clock() = default;

  // The current time on this clock.
  virtual absl::Time Now() = 0;

  // Waits on `cv` (with `mu` held, as for absl::CondVar::Wait) until `cv` is signalled or
  // `deadline`, in this clock's time, passes. Returns with `mu` held. Spurious wake-ups are
  // allowed: callers re-check their condition in a loop.
  virtual void WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;
};

// Wall-clock time (absl::Now) and absl::CondVar's own deadline wait.
class RealClock final : public Clock {
 public:
  absl::Time Now() override;
  void WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, absl::Time deadline) override
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
};

}  // namespace vitserve
