// One request's unit of work for the DynamicBatcher: an already preprocessed input tensor, its
// deadline, a cancellation probe and the completion callback.
//
// Ownership: the caller builds a task and hands it to DynamicBatcher::Schedule, which takes
// ownership only when it returns OK. The batcher then calls `on_done` exactly once.
// Thread-safety: a task is used by one thread at a time; `is_cancelled` and `on_done` are called
// from a batcher executor thread (or from the thread calling Stop).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace vitserve {

struct InferenceTask {
  // [rows, ...] CPU tensor, rows >= 1. Every task of one batcher has the same trailing shape and
  // dtype (the first accepted task fixes them).
  at::Tensor input;

  // After this the task is dropped with DEADLINE_EXCEEDED instead of being computed.
  // InfiniteFuture means "use BatchingOptions::default_timeout".
  absl::Time deadline = absl::InfiniteFuture();

  // May be empty. Checked just before compute; true drops the task with CANCELLED. Must be
  // cheap and thread-safe (e.g. grpc::CallbackServerContext::IsCancelled).
  std::function<bool()> is_cancelled;

  // Required. Called exactly once with this task's rows of the runner's output ([rows, ...], a
  // view into the batch output, on the device the runner returned it on) or with an error:
  // DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE (shutdown before it ran), INTERNAL (runner failure or
  // wrong output rows), or the runner's own error status. Called without any batcher lock held; it
  // may call Schedule again; it must not throw, block for long (it runs on the model's executor
  // thread) or call Stop.
  std::function<void(absl::StatusOr<at::Tensor>)> on_done;

  // > 0: on_done gets only the first output_columns columns of its rows (a view), e.g. a
  // classifier's logits without the top-k columns its instance appends
  // (ServableModel::output_layout). 0: every column. A batch output with fewer columns fails
  // the task with INTERNAL.
  int64_t output_columns = 0;

  // True on the last task of a request that was announced (DynamicBatcher::AnnounceArrival):
  // Schedule then ends that announcement, whether it accepts the task or not.
  bool ends_announcement = false;

  // Set by Schedule to the batcher clock's Now().
  absl::Time enqueue_time;

  // Rows this task contributes to a batch.
  int64_t rows() const { return input.defined() && input.dim() > 0 ? input.size(0) : 0; }
};

}  // namespace vitserve
