#include "server/api/work_pool.h"

#include <utility>

#include "common/thread_name.h"

namespace vitserve {

WorkPool::WorkPool(int num_threads, std::function<void()> on_thread_start) {
  if (num_threads < 1) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  if (num_threads < 1) num_threads = 1;
  threads_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i) {
    threads_.emplace_back([this, on_thread_start] {
      SetCurrentThreadName("preprocess");
      if (on_thread_start) on_thread_start();
      WorkerLoop();
    });
  }
}

WorkPool::~WorkPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

void WorkPool::Schedule(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

void WorkPool::ScheduleFirst(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_front(std::move(task));
}

void WorkPool::WorkerLoop() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](WorkPool* pool) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pool->mu_) {
            return pool->stopping_ || !pool->tasks_.empty();
          },
          this));
      // Drain before stopping: every scheduled task runs.
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace vitserve
