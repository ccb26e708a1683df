#include "server/batching/dynamic_batcher.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "common/thread_name.h"

namespace vitserve {
namespace {

std::string ShapeString(c10::IntArrayRef sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ","), "]");
}

// Runs `fn` (returning a Status or StatusOr) and turns what it throws into INTERNAL
// "<what>: <message>" (c10::Error without its C++ backtrace): a runner or setup that throws
// must fail its tasks or its start-up, not end the executor thread.
template <typename Fn>
auto CatchToInternal(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<DynamicBatcher>> DynamicBatcher::Create(
    BatchingOptions options, std::vector<BatchRunner> runners, Clock* clock,
    BatchObserver* observer, std::vector<ExecutorSetup> setups) {
  std::vector<PartsRunner> parts_runners;
  parts_runners.reserve(runners.size());
  for (BatchRunner& runner : runners) {
    if (!runner) {
      parts_runners.emplace_back();  // Reported as empty below.
      continue;
    }
    parts_runners.push_back([runner = std::move(runner)](const BatchParts& parts,
                                                         std::vector<PartError>*) {
      return parts.size() == 1 ? runner(parts.front()) : runner(at::cat(parts, 0));
    });
  }
  absl::StatusOr<std::unique_ptr<DynamicBatcher>> batcher =
      Create(std::move(options), std::move(parts_runners), clock, observer, std::move(setups));
  if (batcher.ok()) {
    // Concatenation needs every task to have the first one's trailing shape and dtype.
    absl::MutexLock lock(&(*batcher)->mu_);
    (*batcher)->uniform_inputs_ = true;
  }
  return batcher;
}

absl::StatusOr<std::unique_ptr<DynamicBatcher>> DynamicBatcher::Create(
    BatchingOptions options, std::vector<PartsRunner> runners, Clock* clock,
    BatchObserver* observer, std::vector<ExecutorSetup> setups) {
  // A runner computes the whole batch when called: its completion only hands the output over.
  std::vector<PartsLauncher> launchers;
  launchers.reserve(runners.size());
  for (PartsRunner& runner : runners) {
    if (!runner) {
      launchers.emplace_back();  // Reported as empty below.
      continue;
    }
    launchers.push_back([runner = std::move(runner)](const BatchParts& parts,
                                                     std::vector<PartError>* part_errors)
                            -> absl::StatusOr<BatchCompletion> {
      auto output = std::make_shared<absl::StatusOr<at::Tensor>>(runner(parts, part_errors));
      return BatchCompletion([output] { return std::move(*output); });
    });
  }
  return Create(std::move(options), std::move(launchers), /*overlap_batches=*/false, clock,
                observer, std::move(setups));
}

absl::StatusOr<std::unique_ptr<DynamicBatcher>> DynamicBatcher::Create(
    BatchingOptions options, std::vector<PartsLauncher> runners, bool overlap_batches,
    Clock* clock, BatchObserver* observer, std::vector<ExecutorSetup> setups) {
  VITSERVE_RETURN_IF_ERROR(ValidateBatchingOptions(options));
  if (runners.empty()) {
    return absl::InvalidArgumentError("DynamicBatcher needs at least one runner");
  }
  for (const PartsLauncher& runner : runners) {
    if (!runner) return absl::InvalidArgumentError("DynamicBatcher runner is empty");
  }
  if (!setups.empty() && setups.size() != runners.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("DynamicBatcher got ", setups.size(), " executor setups for ",
                     runners.size(), " runners; give one per runner or none"));
  }
  if (clock == nullptr) return absl::InvalidArgumentError("DynamicBatcher clock is null");

  std::unique_ptr<DynamicBatcher> batcher(new DynamicBatcher(std::move(options), clock, observer));
  batcher->overlap_batches_ = overlap_batches;
  setups.resize(runners.size());
  {
    absl::MutexLock lock(&batcher->mu_);
    batcher->setups_pending_ = runners.size();
  }
  batcher->threads_.reserve(runners.size());
  for (size_t i = 0; i < runners.size(); ++i) {
    // Each thread owns its setup and runner; the batcher outlives the threads (Stop joins them).
    batcher->threads_.emplace_back(
        [b = batcher.get(), i, setup = std::move(setups[i]), runner = std::move(runners[i])] {
          SetCurrentThreadName(absl::StrCat("executor-", i));
          b->ExecutorMain(i, setup, runner);
        });
  }
  absl::Status setup_error;
  {
    absl::MutexLock lock(&batcher->mu_);
    batcher->mu_.Await(absl::Condition(
        +[](size_t* pending) { return *pending == 0; }, &batcher->setups_pending_));
    setup_error = batcher->setup_error_;
  }
  if (!setup_error.ok()) {
    batcher->Stop(absl::ZeroDuration());  // No task can be queued yet; this joins the threads.
    return setup_error;
  }
  return batcher;
}

void DynamicBatcher::ExecutorMain(size_t index, const ExecutorSetup& setup,
                                  const PartsLauncher& launcher) {
  const absl::Status status =
      setup ? CatchToInternal("executor setup failed", setup) : absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    if (!status.ok() && setup_error_.ok()) {
      setup_error_ = absl::Status(status.code(),
                                  absl::StrCat("executor ", index, ": ", status.message()));
    }
    --setups_pending_;
  }
  if (status.ok()) ExecutorLoop(launcher);
}

DynamicBatcher::DynamicBatcher(BatchingOptions options, Clock* clock, BatchObserver* observer)
    : options_(std::move(options)), clock_(clock), observer_(observer) {
  preferred_sorted_ = options_.preferred_batch_sizes;
  std::sort(preferred_sorted_.begin(), preferred_sorted_.end());
  preferred_sorted_.erase(std::unique(preferred_sorted_.begin(), preferred_sorted_.end()),
                          preferred_sorted_.end());
}

DynamicBatcher::~DynamicBatcher() { Stop(absl::InfiniteDuration()); }

absl::Status DynamicBatcher::Schedule(std::unique_ptr<InferenceTask>* task) {
  const bool ends_announcement = task != nullptr && *task != nullptr && (*task)->ends_announcement;
  return Enqueue(task, ends_announcement);
}

void DynamicBatcher::AnnounceArrival() {
  absl::MutexLock lock(&mu_);
  ++announced_;
}

void DynamicBatcher::WithdrawArrival() {
  absl::MutexLock lock(&mu_);
  // An executor waiting out the queue delay for this request may now run what is queued.
  if (EndAnnouncementLocked()) cv_.SignalAll();
}

bool DynamicBatcher::EndAnnouncementLocked() {
  if (announced_ > 0) --announced_;
  return announced_ == 0;
}

absl::Status DynamicBatcher::ValidateTask(const std::unique_ptr<InferenceTask>* task) const {
  if (task == nullptr || *task == nullptr) {
    return absl::InvalidArgumentError("Schedule needs a task");
  }
  const InferenceTask& t = **task;
  if (!t.on_done) return absl::InvalidArgumentError("task has no on_done callback");
  if (!t.input.defined() || t.input.dim() == 0 || t.input.size(0) < 1) {
    return absl::InvalidArgumentError(
        "task input must be a tensor of shape [rows, ...] with rows >= 1");
  }
  const int64_t rows = t.input.size(0);
  if (rows > options_.max_batch_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("request has ", rows, " rows (images); this model accepts at most ",
                     options_.max_batch_size, " per request (max_batch_size)"));
  }
  return absl::OkStatus();
}

absl::Status DynamicBatcher::CheckQueueableLocked(const InferenceTask& t) const {
  if (stopping_) return absl::UnavailableError("batcher is shutting down");
  const c10::IntArrayRef trailing = t.input.sizes().slice(1);
  if (uniform_inputs_ && have_input_signature_) {
    if (trailing != c10::IntArrayRef(trailing_shape_) || t.input.dtype() != dtype_) {
      return absl::InvalidArgumentError(
          absl::StrCat("task input has trailing shape ", ShapeString(trailing), " and dtype ",
                       std::string(t.input.dtype().name()), "; this batcher expects ",
                       ShapeString(trailing_shape_), " and ", std::string(dtype_.name())));
    }
  }
  if (static_cast<int64_t>(queue_.size()) >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "queue is full (max_queue_size=", options_.max_queue_size, " requests waiting)"));
  }
  return absl::OkStatus();
}

absl::Status DynamicBatcher::Enqueue(std::unique_ptr<InferenceTask>* task,
                                     bool ends_announcement) {
  const absl::Status valid = ValidateTask(task);  // Needs no lock.
  absl::MutexLock lock(&mu_);
  const bool none_announced = ends_announcement && EndAnnouncementLocked();
  if (absl::Status refused = valid.ok() ? CheckQueueableLocked(**task) : valid; !refused.ok()) {
    // An executor waiting out the queue delay for this task may now run what is queued.
    if (none_announced) cv_.SignalAll();
    return refused;
  }
  InferenceTask& t = **task;
  if (!have_input_signature_) {
    const c10::IntArrayRef trailing = t.input.sizes().slice(1);
    trailing_shape_.assign(trailing.begin(), trailing.end());
    dtype_ = t.input.dtype();
    have_input_signature_ = true;
  }
  t.enqueue_time = clock_->Now();
  if (t.deadline == absl::InfiniteFuture() &&
      options_.default_timeout != absl::InfiniteDuration()) {
    t.deadline = t.enqueue_time + options_.default_timeout;
  }
  queue_.push_back(std::move(*task));
  if (observer_ != nullptr) observer_->OnQueueDepthChanged(queue_.size());
  queue_events_.fetch_add(1, std::memory_order_release);
  // Requests that come within idle_spin of an executor going idle make polls pay again (real
  // time, as the poll's own).
  if (!polls_pay_ && options_.idle_spin > absl::ZeroDuration() && last_went_idle_ &&
      absl::Now() - *last_went_idle_ <= options_.idle_spin) {
    polls_pay_ = true;
  }
  // A polling executor sees the event and takes the task (it looks at the queue under the lock
  // before it sleeps, so the task cannot be missed); no executor waits out a queue delay
  // meanwhile, as executors poll only an empty queue.
  if (!executor_polls_) cv_.SignalAll();
  return absl::OkStatus();
}

void DynamicBatcher::Stop(absl::Duration grace) {
  absl::MutexLock stop_lock(&stop_mu_);
  if (joined_) return;

  std::deque<std::unique_ptr<InferenceTask>> leftovers;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    queue_events_.fetch_add(1, std::memory_order_release);
    cv_.SignalAll();  // Executors stop waiting for the queue delay and drain.
    const absl::Time drain_deadline =
        grace == absl::InfiniteDuration() ? absl::InfiniteFuture() : clock_->Now() + grace;
    while (!queue_.empty() && clock_->Now() < drain_deadline) {
      clock_->WaitWithDeadline(cv_, mu_, drain_deadline);
    }
    leftovers.swap(queue_);
    if (!leftovers.empty() && observer_ != nullptr) observer_->OnQueueDepthChanged(0);
    cv_.SignalAll();
  }
  for (std::unique_ptr<InferenceTask>& task : leftovers) {
    FailTask(*task,
             absl::UnavailableError("server is shutting down; the request was not run before the "
                                    "shutdown grace period ended"));
  }
  for (std::thread& thread : threads_) thread.join();
  joined_ = true;
}

int64_t DynamicBatcher::QueueDepth() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

int64_t DynamicBatcher::InflightTasks() const {
  absl::MutexLock lock(&mu_);
  return queue_.size() + computing_tasks_;
}

size_t DynamicBatcher::ReadyTaskCountLocked(absl::Time now) const {
  // Longest FIFO prefix that fits, and the largest prefix with a preferred row count.
  int64_t rows = 0;
  size_t fit = 0;
  size_t preferred_prefix = 0;
  for (const std::unique_ptr<InferenceTask>& task : queue_) {
    if (rows + task->rows() > options_.max_batch_size) break;
    rows += task->rows();
    ++fit;
    if (std::binary_search(preferred_sorted_.begin(), preferred_sorted_.end(), rows)) {
      preferred_prefix = fit;
    }
  }
  const bool full = rows == options_.max_batch_size || fit < queue_.size();
  if (full) return fit;
  if (preferred_prefix > 0) return preferred_prefix;
  if (stopping_ || (options_.idle_dispatch && announced_ == 0) ||
      now >= queue_.front()->enqueue_time + options_.max_queue_delay) {
    return fit;
  }
  return 0;
}

std::vector<std::unique_ptr<InferenceTask>> DynamicBatcher::TakeLocked(size_t count) {
  std::vector<std::unique_ptr<InferenceTask>> batch;
  batch.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  computing_tasks_ += static_cast<int64_t>(count);
  if (observer_ != nullptr) observer_->OnQueueDepthChanged(queue_.size());
  cv_.SignalAll();  // Another executor may have a batch too; Stop may be draining.
  return batch;
}

bool DynamicBatcher::SpinUntilQueueEvent(uint64_t seen) const {
  // Real time, not clock_: the spin saves wall-clock wake-up latency and changes no decision.
  const absl::Time until = absl::Now() + options_.idle_spin;
  while (queue_events_.load(std::memory_order_acquire) == seen) {
    for (int i = 0; i < 64; ++i) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();  // Leaves the core's resources to its sibling hyperthread.
#endif
    }
    if (absl::Now() >= until) return false;
  }
  return true;
}

std::vector<std::unique_ptr<InferenceTask>> DynamicBatcher::NextBatch() {
  const bool polling = options_.idle_spin > absl::ZeroDuration();
  bool polled = false;  // At most one poll per call: after it, the executor sleeps.
  absl::MutexLock lock(&mu_);
  bool went_idle = false;
  while (true) {
    if (queue_.empty()) {
      if (stopping_) return {};
      if (polling && !went_idle) {
        went_idle = true;
        last_went_idle_ = absl::Now();
      }
      // One executor polls at a time: the request it waits for is its (Enqueue wakes no one
      // while it polls), so a second would only spin a core. And only while no batch is
      // computing: a client that waits for that batch's reply sends its next request after
      // it, when the executor that computed it polls.
      if (polling && !polled && polls_pay_ && !executor_polls_ && computing_tasks_ == 0) {
        polled = true;
        const uint64_t seen = queue_events_.load(std::memory_order_relaxed);
        executor_polls_ = true;
        mu_.Unlock();
        const bool paid = SpinUntilQueueEvent(seen);
        mu_.Lock();
        executor_polls_ = false;
        // Stop's event ends a poll too: one that it ended with nothing queued neither paid nor
        // ran out, and is not reported (the metric would count a shutdown as a request).
        if (paid && stopping_ && queue_.empty()) continue;
        if (observer_ != nullptr) observer_->OnIdlePoll(paid);
        // A poll that runs out would most likely run out next time too: executors sleep at
        // once then, until a request again comes within idle_spin of one going idle (Enqueue).
        if (!paid) polls_pay_ = false;
        continue;
      }
      clock_->WaitWithDeadline(cv_, mu_, absl::InfiniteFuture());
      continue;
    }
    const size_t ready = ReadyTaskCountLocked(clock_->Now());
    if (ready > 0) return TakeLocked(ready);
    clock_->WaitWithDeadline(cv_, mu_, queue_.front()->enqueue_time + options_.max_queue_delay);
  }
}

std::vector<std::unique_ptr<InferenceTask>> DynamicBatcher::ReadyBatch() {
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) return {};
  const size_t ready = ReadyTaskCountLocked(clock_->Now());
  // Nothing taken: no depth to report, and no waiter to wake for a queue that did not change.
  if (ready == 0) return {};
  return TakeLocked(ready);
}

void DynamicBatcher::ExecutorLoop(const PartsLauncher& launcher) {
  std::optional<LaunchedBatch> in_flight;
  while (true) {
    // With a batch in flight, only a batch that is ready now: waiting for a fuller one would
    // hold back the answers of the one in flight.
    std::vector<std::unique_ptr<InferenceTask>> batch =
        in_flight ? ReadyBatch() : NextBatch();
    if (batch.empty() && !in_flight) return;  // Stopping, and nothing is left.
    std::optional<LaunchedBatch> launched;
    if (!batch.empty()) launched = Launch(launcher, std::move(batch));
    if (in_flight) Complete(*in_flight);
    in_flight = std::move(launched);
    if (!overlap_batches_ && in_flight) {
      Complete(*in_flight);
      in_flight.reset();
    }
  }
}

void DynamicBatcher::FailTask(InferenceTask& task, absl::Status status) {
  if (observer_ != nullptr) observer_->OnTaskDropped(status);
  task.on_done(std::move(status));
}

DynamicBatcher::LaunchedBatch DynamicBatcher::Launch(
    const PartsLauncher& launcher, std::vector<std::unique_ptr<InferenceTask>> batch) {
  LaunchedBatch launched;
  launched.taken = batch.size();
  const absl::Time now = clock_->Now();
  launched.live.reserve(batch.size());
  for (std::unique_ptr<InferenceTask>& task : batch) {
    if (observer_ != nullptr) observer_->OnTaskDequeued(now - task->enqueue_time);
    // The deadline first: gRPC also cancels a call whose deadline expired, and the deadline is
    // the reason the caller needs to see.
    if (now >= task->deadline) {
      FailTask(*task, absl::DeadlineExceededError(absl::StrCat(
                          "deadline passed after ", absl::FormatDuration(now - task->enqueue_time),
                          " in the batching queue; the request was not run")));
    } else if (task->is_cancelled && task->is_cancelled()) {
      FailTask(*task, absl::CancelledError("request was cancelled before it ran"));
    } else {
      launched.rows += task->rows();
      launched.live.push_back(std::move(task));
    }
  }
  launched.start = clock_->Now();
  if (launched.live.empty()) {
    launched.completion = absl::CancelledError("no task left to run");  // Never reported.
    return launched;
  }
  launched.completion =
      CatchToInternal("model runner failed", [&]() -> absl::StatusOr<BatchCompletion> {
        BatchParts parts;
        parts.reserve(launched.live.size());
        for (const auto& task : launched.live) parts.push_back(task->input);
        return launcher(parts, &launched.part_errors);
      });
  return launched;
}

void DynamicBatcher::Complete(LaunchedBatch& batch) {
  std::vector<std::unique_ptr<InferenceTask>>& live = batch.live;
  if (!live.empty()) {
    absl::StatusOr<at::Tensor> output =
        !batch.completion.ok()
            ? absl::StatusOr<at::Tensor>(batch.completion.status())
            : CatchToInternal("model runner failed", [&]() -> absl::StatusOr<at::Tensor> {
                return (*batch.completion)();
              });
    const int64_t total_rows = batch.rows;
    if (output.ok() &&
        (!output->defined() || output->dim() == 0 || output->size(0) != total_rows)) {
      output = absl::InternalError(absl::StrCat(
          "model runner returned ",
          output->defined() ? ShapeString(output->sizes()) : std::string("an undefined tensor"),
          " for a batch of ", total_rows, " rows; expected ", total_rows, " output rows"));
    }
    if (observer_ != nullptr) {
      observer_->OnBatchComputed(total_rows, clock_->Now() - batch.start, output.status());
    }
    if (!output.ok()) {
      for (const auto& task : live) task->on_done(output.status());
    } else {
      // Parts the runner failed alone get their own error (the first one reported for a part).
      std::vector<const absl::Status*> failed(live.size(), nullptr);
      for (const PartError& error : batch.part_errors) {
        if (error.part < live.size() && failed[error.part] == nullptr && !error.status.ok()) {
          failed[error.part] = &error.status;
        }
      }
      int64_t offset = 0;
      for (size_t i = 0; i < live.size(); ++i) {
        const int64_t rows = live[i]->rows();
        const int64_t columns = live[i]->output_columns;
        if (failed[i] != nullptr) {
          live[i]->on_done(*failed[i]);
        } else if (columns == 0 || (output->dim() >= 2 && output->size(1) == columns)) {
          live[i]->on_done(output->narrow(0, offset, rows));
        } else if (output->dim() < 2 || output->size(1) < columns) {
          live[i]->on_done(absl::InternalError(absl::StrCat(
              "model runner returned ", ShapeString(output->sizes()), "; the task reads ",
              columns, " columns")));
        } else {
          live[i]->on_done(output->narrow(0, offset, rows).narrow(1, 0, columns));
        }
        offset += rows;
      }
    }
  }
  // The tasks (and the inputs the launcher read) are released only now.
  live.clear();
  absl::MutexLock lock(&mu_);
  computing_tasks_ -= static_cast<int64_t>(batch.taken);
}

}  // namespace vitserve
