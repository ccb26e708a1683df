#include "server/api/work_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <string>
#include <thread>

#include "absl/synchronization/barrier.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace vitserve {
namespace {

TEST(WorkPoolTest, RunsEveryTaskOnItsWorkers) {
  WorkPool pool(3);
  EXPECT_EQ(pool.num_threads(), 3);
  absl::Mutex mu;
  std::set<std::thread::id> workers;
  std::atomic<int> done{0};
  absl::BlockingCounter finished(100);
  for (int i = 0; i < 100; ++i) {
    pool.Schedule([&] {
      {
        absl::MutexLock lock(&mu);
        workers.insert(std::this_thread::get_id());
      }
      done.fetch_add(1);
      finished.DecrementCount();
    });
  }
  finished.Wait();
  EXPECT_EQ(done.load(), 100);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(workers.count(std::this_thread::get_id()), 0u);
  EXPECT_LE(workers.size(), 3u);
}

TEST(WorkPoolTest, TasksRunConcurrently) {
  // Two tasks that each wait for the other can only finish if they run at the same time.
  WorkPool pool(2);
  absl::Barrier both_started(2);
  absl::BlockingCounter finished(2);
  for (int i = 0; i < 2; ++i) {
    pool.Schedule([&] {
      both_started.Block();
      finished.DecrementCount();
    });
  }
  finished.Wait();
}

TEST(WorkPoolTest, DestructorRunsTasksAlreadyScheduled) {
  std::atomic<int> done{0};
  {
    WorkPool pool(1);
    for (int i = 0; i < 50; ++i) pool.Schedule([&] { done.fetch_add(1); });
  }
  EXPECT_EQ(done.load(), 50);
}

TEST(WorkPoolTest, NonPositiveSizeMeansOneThreadPerCore) {
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  EXPECT_EQ(WorkPool(0).num_threads(), cores);
  EXPECT_EQ(WorkPool(-3).num_threads(), cores);
  EXPECT_EQ(WorkPool(3).num_threads(), 3);
}

// Named threads let an operator read per-stage CPU time from /proc/PID/task/*/comm.
TEST(WorkPoolTest, ThreadsAreNamedPreprocess) {
  WorkPool pool(2);
  absl::Mutex mu;
  std::string name;
  absl::BlockingCounter finished(1);
  pool.Schedule([&] {
    char buffer[16] = {};
    pthread_getname_np(pthread_self(), buffer, sizeof(buffer));
    absl::MutexLock lock(&mu);
    name = buffer;
    finished.DecrementCount();
  });
  finished.Wait();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(name, "preprocess");
}

TEST(WorkPoolTest, ThreadStartHookRunsOnEachWorkerBeforeItsTasks) {
  thread_local bool started_here = false;
  std::atomic<int> hook_calls{0};
  std::atomic<int> tasks_before_hook{0};
  {
    WorkPool pool(3, [&] {
      started_here = true;
      hook_calls.fetch_add(1);
    });
    absl::BlockingCounter finished(30);
    for (int i = 0; i < 30; ++i) {
      pool.Schedule([&] {
        if (!started_here) tasks_before_hook.fetch_add(1);
        finished.DecrementCount();
      });
    }
    finished.Wait();
  }  // Joined: every worker has started.
  EXPECT_EQ(hook_calls.load(), 3);
  EXPECT_EQ(tasks_before_hook.load(), 0);
  EXPECT_FALSE(started_here);  // Only the workers ran it.
}

TEST(WorkPoolTest, TaskMayScheduleMoreWork) {
  WorkPool pool(1);
  absl::BlockingCounter finished(1);
  pool.Schedule([&] { pool.Schedule([&] { finished.DecrementCount(); }); });
  finished.Wait();
}

}  // namespace
}  // namespace vitserve
