#include "tests/test_util/fake_clock.h"

#include <algorithm>
#include <vector>

namespace vitserve {

FakeClock::FakeClock() : FakeClock(absl::FromUnixSeconds(1'700'000'000)) {}

FakeClock::FakeClock(absl::Time start) : now_(start) {}

absl::Time FakeClock::Now() {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, absl::Time deadline) {
  std::list<Waiter>::iterator self;
  {
    absl::MutexLock lock(&mu_);
    if (now_ >= deadline) return;
    self = waiters_.insert(waiters_.end(), Waiter{&cv, &mu, deadline});
  }
  // `mu` stays held from registration until Wait releases it atomically, and SetTime locks `mu`
  // before signalling, so a time change between the two cannot be missed.
  cv.Wait(&mu);
  absl::MutexLock lock(&mu_);
  waiters_.erase(self);
}

void FakeClock::SetTime(absl::Time time) {
  std::vector<Waiter> to_wake;
  {
    absl::MutexLock lock(&mu_);
    now_ = std::max(now_, time);
    to_wake.assign(waiters_.begin(), waiters_.end());
  }
  for (const Waiter& waiter : to_wake) {
    absl::MutexLock lock(waiter.mu);
    waiter.cv->SignalAll();
  }
}

void FakeClock::AdvanceBy(absl::Duration duration) { SetTime(Now() + duration); }

bool FakeClock::BlockUntilWaiters(int n, absl::Duration real_timeout) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int>(waiters_.size()) >= n;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), real_timeout);
}

bool FakeClock::BlockUntilWaiterWithDeadline(absl::Time deadline, absl::Duration real_timeout) {
  absl::MutexLock lock(&mu_);
  auto has_waiter = [this, deadline]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::any_of(waiters_.begin(), waiters_.end(),
                       [deadline](const Waiter& w) { return w.deadline == deadline; });
  };
  return mu_.AwaitWithTimeout(absl::Condition(&has_waiter), real_timeout);
}

int FakeClock::NumWaiters() {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

}  // namespace vitserve
