#include "common/mutex_mode.h"

#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

// Takes two mutexes in one order, then in the other: a potential deadlock (never a real one,
// on one thread) that absl's deadlock detection reports by aborting.
void LockInBothOrders() {
  absl::Mutex a;
  absl::Mutex b;
  a.Lock();
  b.Lock();
  b.Unlock();
  a.Unlock();
  b.Lock();
  a.Lock();
  a.Unlock();
  b.Unlock();
}

// Debian's abseil is built without NDEBUG, so its deadlock detection (a process-wide lock-order
// graph updated on every Lock) is on by default, as the tests want it; UseReleaseMutexes, which
// the binaries call, turns it off. If this first expectation fails, Debian's abseil changed and
// common/mutex_mode.h's reason is gone.
TEST(MutexModeDeathTest, DetectionIsOnByDefaultAndUseReleaseMutexesTurnsItOff) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(LockInBothOrders(), "deadlock");
  EXPECT_EXIT(
      {
        UseReleaseMutexes();
        LockInBothOrders();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace vitserve
