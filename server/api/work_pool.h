// A fixed-size pool of worker threads for CPU work that must not run on gRPC's callback
// threads: decoding and preprocessing images. gRPC 1.51 runs callback-API reactors on a small
// set of its own threads, so a reactor that decodes a JPEG inline serialises every request of
// the server behind that work; reactors hand it to this pool and return at once.
//
// Ownership: owns its threads; the destructor runs every task already scheduled, then joins.
// Thread-safety: Schedule() may be called from any thread, including a worker.
// Errors: none; a task must not throw (exceptions escaping a task terminate the process).
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace vitserve {

class WorkPool {
 public:
  // `num_threads` < 1 means one per hardware thread. `on_thread_start`, when given, runs first
  // on each worker thread, before any task (per-thread library settings).
  explicit WorkPool(int num_threads, std::function<void()> on_thread_start = nullptr);
  ~WorkPool();
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `task` to run on a worker. Never blocks.
  void Schedule(std::function<void()> task);
  // Queues `task` ahead of every waiting task (completions of computed requests go before
  // decoding new ones, so finished work leaves the server first). Never blocks.
  void ScheduleFirst(std::function<void()> task);

  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkerLoop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace vitserve
