#include "server/runtime/device.h"

#include <dirent.h>

#include <thread>
#include <utility>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

// Threads of this process, from /proc.
int ThreadCount() {
  int count = 0;
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return -1;
  while (const dirent* entry = readdir(tasks)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(tasks);
  return count;
}

struct ThreadRun {
  int intra_op_threads = 0;  // at::get_num_threads() on the thread
  int threads_gained = 0;    // by the process while the thread ran parallel-sized work
};

// Runs tensor work big enough for LibTorch to parallelise (an ATen loop and MKL's vector math,
// which opens its own OpenMP region) on a fresh thread, after RunTorchSeriallyOnThisThread when
// `serial`.
ThreadRun RunOnFreshThread(bool serial, const at::Tensor& x) {
  ThreadRun run;
  std::thread([&] {
    if (serial) RunTorchSeriallyOnThisThread();
    run.intra_op_threads = at::get_num_threads();
    const int before = ThreadCount();
    const at::Tensor y = at::sqrt(x) + x;
    EXPECT_GT(y.sum().item<float>(), 0.0f);
    run.threads_gained = ThreadCount() - before;
  }).join();
  return run;
}

TEST(RunTorchSeriallyOnThisThreadTest, ThisThreadsOperatorsGetNoOpenMPTeam) {
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  const at::Tensor x = at::rand({4, 1 << 20}) + 1;

  const ThreadRun serial = RunOnFreshThread(/*serial=*/true, x);
  EXPECT_EQ(serial.intra_op_threads, 1);
  EXPECT_EQ(serial.threads_gained, 0);

  // The same work on a thread left alone gets a team of OpenMP threads (so the check above can
  // fail), and the process-wide count stays what it was.
  const ThreadRun left_alone = RunOnFreshThread(/*serial=*/false, x);
  EXPECT_EQ(left_alone.intra_op_threads, 2);
  EXPECT_GT(left_alone.threads_gained, 0);

  at::set_num_threads(saved);
}

}  // namespace
}  // namespace vitserve
