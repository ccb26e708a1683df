// DynamicBatcher: groups preprocessed requests of one model into batches and runs them on the
// model's instances (one executor thread per BatchRunner, all sharing one FIFO queue).
//
// Batch formation (under the queue lock, which is held only to pick tasks; concatenation, the
// runner and the callbacks run outside it). Tasks are taken in FIFO order and a task is never
// split across batches. Let P be the longest queue prefix whose rows fit in max_batch_size.
//   1. "Full": P has max_batch_size rows, or the next task does not fit -> run P.
//   2. Else, if a prefix of P has exactly a preferred batch size of rows -> run the largest one.
//   3. Else, if the oldest task has waited max_queue_delay, or the batcher is draining, or
//      (idle_dispatch) no request is announced as on its way -> run P.
//   4. Else wait (for a new task, the end of an announcement, or the oldest task's delay).
// Announcements (AnnounceArrival, ended by the task flagged ends_announcement or by
// WithdrawArrival) let the services say "a request for this model is being decoded": only then
// is waiting for a fuller batch worth it. Without any, a request arriving at an idle model runs
// at once instead of after max_queue_delay.
// Just before compute, tasks whose deadline has passed fail with DEADLINE_EXCEEDED and (the
// others) tasks whose is_cancelled() is true fail with CANCELLED; neither is computed. The rest are
// concatenated along dim 0, run, and each gets back its own rows of the output. A runner error
// (status, c10::Error or std::exception -> INTERNAL) or an output with the wrong row count
// (INTERNAL) goes to every task of the batch.
//
// With launchers and overlap_batches (Create's PartsLauncher form) an executor launches its
// next batch before it completes the one in flight, when a batch is ready then (see that
// Create); tasks of a batch in flight count as computing (InflightTasks) and Stop lets them
// finish.
//
// Ownership: the batcher owns its runners and queued tasks; it borrows `clock` and `observer`,
// which must outlive it.
// Thread-safety: Schedule, Stop, QueueDepth and InflightTasks may be called from any thread.
// Errors: see Create and Schedule.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/batching/batch_observer.h"
#include "server/batching/batching_options.h"
#include "server/batching/clock.h"
#include "server/batching/inference_task.h"

namespace vitserve {

// Runs one batch on one model instance: [N, ...] -> [N, ...] (N output rows in input order).
// Called from that instance's executor thread only; may throw (converted to INTERNAL).
using BatchRunner = std::function<absl::StatusOr<at::Tensor>(const at::Tensor& batch)>;

// A part of a batch that its runner could not compute while it computed the others (an image
// its device could not decode): that part's task gets `status` instead of its rows.
struct PartError {
  size_t part = 0;  // Index into the BatchParts.
  absl::Status status;
};

// The same, given the batch as its tasks hold it: parts[i] is the i-th task's [rows_i, ...]
// input, in queue order (N = the sum of rows_i). The runner assembles the rows where it needs
// them (a model instance: straight into its pinned staging buffer), so the batcher never makes
// a concatenated copy first. A runner that fails only some parts returns the output (with
// rows for every part, those of the failed parts ignored) and appends the failed parts to
// `part_errors` (never null); an error status fails every task of the batch.
using BatchParts = std::vector<at::Tensor>;
using PartsRunner = std::function<absl::StatusOr<at::Tensor>(
    const BatchParts& parts, std::vector<PartError>* part_errors)>;

// Two halves of running one batch, so that a runner that can start a batch before the previous
// one has finished (a model instance on CUDA: the device works through its stream in order) may
// be given the next batch early. A launcher issues the batch's work (or does it) and returns
// its completion; the completion waits for that work and
// returns the output as a PartsRunner would. Part errors are reported by the launcher only. The
// launcher's parts stay valid until its completion has returned (the batcher holds the tasks).
// Both are called on the runner's executor thread; either may throw (INTERNAL for the batch).
using BatchCompletion = std::function<absl::StatusOr<at::Tensor>()>;
using PartsLauncher = std::function<absl::StatusOr<BatchCompletion>(
    const BatchParts& parts, std::vector<PartError>* part_errors)>;

// Runs once on a runner's executor thread before that thread takes any batch (e.g. a model
// instance's warm-up, which must happen on the thread that serves: see ModelInstance::WarmUp).
using ExecutorSetup = std::function<absl::Status()>;

class DynamicBatcher {
 public:
  // Starts one executor thread per runner. With `setups` (empty, or one per runner; an entry
  // may be empty), each thread first runs its setup, and Create returns only when every setup
  // has finished; if one fails, the threads are stopped and joined and Create returns that
  // error, prefixed with the executor's index. INVALID_ARGUMENT for bad options (the field
  // named), no runners, an empty runner, a setups count that is not the runners', or a null
  // clock. `observer` may be null.
  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(
      BatchingOptions options, std::vector<PartsRunner> runners, Clock* clock,
      BatchObserver* observer, std::vector<ExecutorSetup> setups = {});
  // The same with runners that take the concatenated batch (the batcher concatenates).
  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(
      BatchingOptions options, std::vector<BatchRunner> runners, Clock* clock,
      BatchObserver* observer, std::vector<ExecutorSetup> setups = {});
  // The same with launchers. With `overlap_batches` each executor keeps up to two batches in
  // flight: while one batch runs, the executor takes the next one if the batching rules say it
  // is ready now, launches it, and only then completes the first (its tasks' on_done), so the
  // device is given the next batch before the executor spends its time answering the previous
  // one's requests. With nothing ready it completes the batch in flight first: answers never
  // wait for the queue delay. Batches complete in the order they were launched. Without it,
  // each batch is completed before the next is taken (for launchers that compute the whole
  // batch, where overlapping would only delay the answers).
  static absl::StatusOr<std::unique_ptr<DynamicBatcher>> Create(
      BatchingOptions options, std::vector<PartsLauncher> launchers, bool overlap_batches,
      Clock* clock, BatchObserver* observer, std::vector<ExecutorSetup> setups = {});

  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Stop(absl::InfiniteDuration()): every accepted task completes.
  ~DynamicBatcher();

  // Queues `*task`. Never blocks. On OK the batcher owns the task (`*task` becomes null) and will
  // call its on_done exactly once; on any error `*task` is left untouched and on_done is not
  // called. Errors:
  //   INVALID_ARGUMENT: null task, no on_done, input undefined or without rows, more rows than
  //     max_batch_size, or (with BatchRunners only) a trailing shape / dtype different from
  //     the first accepted task's;
  //   RESOURCE_EXHAUSTED: max_queue_size tasks are already waiting;
  //   UNAVAILABLE: Stop has been called.
  absl::Status Schedule(std::unique_ptr<InferenceTask>* task);

  // A request is on its way (accepted, still being decoded): executors may wait up to
  // max_queue_delay for it. Each call must be ended exactly once: by scheduling a task with
  // ends_announcement set (accepted or not), or by WithdrawArrival when the request fails
  // before it reaches Schedule. Never blocks for long.
  void AnnounceArrival();
  void WithdrawArrival();

  // Stops accepting tasks, keeps running accepted ones until the queue is empty or `grace`
  // (on the batcher's clock) has passed, then fails whatever is still queued with UNAVAILABLE
  // and joins the executor threads (a batch already being computed always finishes).
  // Idempotent; later calls wait for the first to finish. Must not be called from on_done or a
  // runner.
  void Stop(absl::Duration grace);

  // Tasks waiting in the queue.
  int64_t QueueDepth() const;
  // Tasks accepted and not yet completed: queued plus being computed.
  int64_t InflightTasks() const;

 private:
  // A launched batch waiting for its completion.
  struct LaunchedBatch {
    std::vector<std::unique_ptr<InferenceTask>> live;  // The tasks computed, in part order.
    size_t taken = 0;  // Tasks taken from the queue for it, dropped ones included.
    int64_t rows = 0;
    absl::Time start;  // When its launch began, on the batcher's clock.
    absl::StatusOr<BatchCompletion> completion;
    std::vector<PartError> part_errors;
  };

  DynamicBatcher(BatchingOptions options, Clock* clock, BatchObserver* observer);

  // Runs `setup` (if any) and reports it to Create, then, if it succeeded, ExecutorLoop.
  void ExecutorMain(size_t index, const ExecutorSetup& setup, const PartsLauncher& launcher);
  void ExecutorLoop(const PartsLauncher& launcher);
  // Blocks until a batch is ready and removes it from the queue; empty when the executor should
  // exit (stopping and the queue is empty). An executor finding the queue empty first polls it
  // for options_.idle_spin (once per call) while polls_pay_ and no other executor polls, then
  // sleeps.
  std::vector<std::unique_ptr<InferenceTask>> NextBatch() ABSL_LOCKS_EXCLUDED(mu_);
  // The batch that is ready now, removed from the queue, or empty without waiting.
  std::vector<std::unique_ptr<InferenceTask>> ReadyBatch() ABSL_LOCKS_EXCLUDED(mu_);
  // Removes the `count` leading tasks from the queue and counts them as computing.
  std::vector<std::unique_ptr<InferenceTask>> TakeLocked(size_t count)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Number of leading queue tasks to run now, or 0 to keep waiting.
  size_t ReadyTaskCountLocked(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the batch's expired and cancelled tasks and launches the others.
  LaunchedBatch Launch(const PartsLauncher& launcher,
                       std::vector<std::unique_ptr<InferenceTask>> batch);
  // Polls queue_events_ (without the lock) until it differs from `seen` (true) or idle_spin has
  // passed (false).
  bool SpinUntilQueueEvent(uint64_t seen) const ABSL_LOCKS_EXCLUDED(mu_);
  // Waits for a launched batch and gives each task its rows or error.
  void Complete(LaunchedBatch& batch);
  void FailTask(InferenceTask& task, absl::Status status);
  // Schedule's checks of the task itself (no state of the batcher's) and of whether the queue
  // takes it now.
  absl::Status ValidateTask(const std::unique_ptr<InferenceTask>* task) const;
  absl::Status CheckQueueableLocked(const InferenceTask& t) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Schedule's work. `ends_announcement`: the task's announcement ends too, under the lock
  // that queues it (so that a polling executor, which takes the task at once, never finds it
  // queued and still announced), or whenever the task is refused.
  absl::Status Enqueue(std::unique_ptr<InferenceTask>* task, bool ends_announcement);
  // Ends one announcement (WithdrawArrival's and Enqueue's); true when none is left, so that an
  // executor waiting out the queue delay for it should be woken.
  bool EndAnnouncementLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BatchingOptions options_;
  // Whether executors keep a second batch in flight (launchers), or complete each batch before
  // taking the next (runners, whose launch already computes the whole batch).
  bool overlap_batches_ = false;
  Clock* const clock_;
  BatchObserver* const observer_;      // May be null.
  std::vector<int> preferred_sorted_;  // Ascending, unique.

  mutable absl::Mutex mu_;
  // Signalled on every queue change (but a task queued while an executor polls: executor_polls_)
  // and on Stop; executors and Stop wait on it.
  absl::CondVar cv_;
  std::deque<std::unique_ptr<InferenceTask>> queue_ ABSL_GUARDED_BY(mu_);
  // Bumped (under mu_) whenever a task is queued and when Stop begins, so that a spinning
  // executor (options_.idle_spin) sees without the lock that it should look at the queue again.
  std::atomic<uint64_t> queue_events_{0};
  // Whether an executor polls the queue (NextBatch, options_.idle_spin) right now; one at a
  // time. While one does, a queued task is left to it: Enqueue wakes no sleeping executor,
  // which would race the poller for the task and, when it won, cost the wake-up the poll is
  // there to save.
  bool executor_polls_ ABSL_GUARDED_BY(mu_) = false;
  // Whether idle executors poll (options_.idle_spin): cleared by a poll that runs out, set by a
  // request queued within idle_spin of last_went_idle_ (real time: when an executor last found
  // the queue empty). One flag for all executors: they take turns, so a per-executor record of
  // when each went idle would mostly tell how long ago its last turn was.
  bool polls_pay_ ABSL_GUARDED_BY(mu_) = true;
  std::optional<absl::Time> last_went_idle_ ABSL_GUARDED_BY(mu_);
  int64_t computing_tasks_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t announced_ ABSL_GUARDED_BY(mu_) = 0;  // Requests on their way (AnnounceArrival).
  // Executor setups still running, and the first one's error; Create waits for the count to
  // reach 0.
  size_t setups_pending_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status setup_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Set for batchers created with BatchRunners, which concatenate: then the first accepted task
  // fixes the trailing sizes and dtype every later task must have. A PartsRunner gets each
  // task's input as it is and checks the parts itself (a model instance takes float rows and
  // uint8 images of any size in one batch).
  bool uniform_inputs_ ABSL_GUARDED_BY(mu_) = false;
  // Fixed by the first accepted task: its input's trailing sizes and dtype.
  bool have_input_signature_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int64_t> trailing_shape_ ABSL_GUARDED_BY(mu_);
  caffe2::TypeMeta dtype_ ABSL_GUARDED_BY(mu_);

  // Serialises Stop calls; threads are joined once.
  absl::Mutex stop_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  bool joined_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::vector<std::thread> threads_;  // Written only by Create and by the joining Stop.
};

}  // namespace vitserve
