#include "common/malloc_settings.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

long ThreadPageFaults() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return usage.ru_minflt;
}

// Page faults per round, after five rounds of warm-up, of what a CPU forward pass does to
// malloc: on a thread of its own (its own arena), blocks of 1-12 MiB written, a few alive at a
// time, all freed at the end of the round.
long FaultsPerRound() {
  long per_round = 0;
  std::thread([&per_round] {
    constexpr size_t kSizes[] = {4 << 20, 9 << 20, 2 << 20, 12 << 20, 5 << 20, 1 << 20};
    constexpr int kRounds = 20;
    constexpr int kWarmUp = 5;
    long at_warm = 0;
    for (int round = 0; round < kRounds; ++round) {
      if (round == kWarmUp) at_warm = ThreadPageFaults();
      std::vector<void*> alive;
      for (const size_t size : kSizes) {
        void* block = std::malloc(size);
        std::memset(block, 1, size);
        alive.push_back(block);
        if (alive.size() > 2) {
          std::free(alive.front());
          alive.erase(alive.begin());
        }
      }
      for (void* block : alive) std::free(block);
    }
    per_round = (ThreadPageFaults() - at_warm) / (kRounds - kWarmUp);
  }).join();
  return per_round;
}

TEST(MallocSettingsTest, FreedActivationsAreReusedWithoutPageFaults) {
  // Each round writes 33 MiB, 8,448 pages. glibc's defaults, measured in a child process (the
  // settings are process-wide and cannot be undone), fault on most of them every round; the
  // test then knows it measures something.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(FaultsPerRound() > 1000 ? 0 : 1);
  int wait_status = 0;
  ASSERT_EQ(waitpid(child, &wait_status, 0), child);
  ASSERT_TRUE(WIFEXITED(wait_status));
  EXPECT_EQ(WEXITSTATUS(wait_status), 0) << "glibc's defaults no longer fault on this pattern";

  ASSERT_TRUE(KeepFreedMemoryForReuse().ok());
  EXPECT_LT(FaultsPerRound(), 100);
}

TEST(MallocSettingsTest, AnOperatorsMallocTunablesWin) {
  EXPECT_TRUE(TunablesSetMalloc("glibc.malloc.trim_threshold=0"));
  EXPECT_TRUE(TunablesSetMalloc("glibc.rtld.nns=2:glibc.malloc.arena_max=1"));
  EXPECT_FALSE(TunablesSetMalloc("glibc.pthread.rseq=0"));
  EXPECT_FALSE(TunablesSetMalloc(""));
}

}  // namespace
}  // namespace vitserve
