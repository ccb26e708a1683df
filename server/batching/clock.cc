#include "server/batching/clock.h"

namespace vitserve {

absl::Time RealClock::Now() { return absl::Now(); }

void RealClock::WaitWithDeadline(absl::CondVar& cv, absl::Mutex& mu, absl::Time deadline) {
  cv.WaitWithDeadline(&mu, deadline);
}

}  // namespace vitserve
