// Pieces shared by the gRPC services: the call's deadline in absl time, and scheduling a
// preprocessed [N,...] input on a model's batcher, split into tasks of at most the model's
// max_batch_size rows, with a single completion.
//
// Ownership: ScheduleRows borrows `model` only for the duration of the call; the caller keeps its
// handle alive until its reactor's OnDone (see ServableModel's contract in
// server/model_manager.h: handles are never dropped on an executor thread, so `done` must not
// own one).
// Thread-safety: free functions; `done` runs on an executor thread, or inline on the calling
// thread when nothing was scheduled.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "server/api/work_pool.h"
#include "server/model_manager.h"

namespace vitserve {

// The call's deadline, or absl::InfiniteFuture() when the client set none.
absl::Time DeadlineOf(const grpc::CallbackServerContext& context);

// `deadline`, or now + `ceiling` when that comes first: the longest any request may stay in the
// server (--max-request-seconds), whatever deadline its client set, or none.
absl::Time CappedDeadline(absl::Time deadline, absl::Duration ceiling);

// Whether the client has cancelled the call (or it has otherwise ended), polled by work that runs
// after the handler returned. `context` must outlive every call of the returned function.
std::function<bool()> CancellationOf(grpc::CallbackServerContext* context);

// Whether work for a call should still start: DEADLINE_EXCEEDED once `deadline` has passed
// (checked first: gRPC also marks a call cancelled when its deadline expires, and the deadline
// is the reason a user needs to see, in the reply and in vitserve_requests_total), CANCELLED
// when `is_cancelled` (may be empty) says so, OK otherwise.
absl::Status CheckStillWanted(absl::Time deadline, const std::function<bool()>& is_cancelled);

// Counts one request of `model` in flight (vitserve_inflight_requests) and returns `finish`
// wrapped so that calling it records the request's code and duration
// (vitserve_requests_total, vitserve_request_duration_seconds) and ends the in-flight count.
// The returned function must be called exactly once.
std::function<void(absl::Status)> TrackRequest(const ServableModel& model,
                                               std::function<void(absl::Status)> finish);

// Admits a request of `model` at the door (ServableModel::Admit), before any decoding. Returns
// `finish` wrapped so that calling it ends the admission; or, when the model is overloaded, calls
// `finish` with RESOURCE_EXHAUSTED at once and returns an empty function (the request is over).
std::function<void(absl::Status)> AdmitRequest(const ServableModel& model,
                                               std::function<void(absl::Status)> finish);

// `fill` wrapped so that it runs on `pool` (ahead of queued work: WorkPool::ScheduleFirst)
// rather than on the executor thread that completes a batch, which would otherwise build every
// reply of the batch before it could take the next one. With a null pool, `fill` runs inline.
std::function<void(absl::StatusOr<at::Tensor>)> OnPool(
    WorkPool* pool, std::function<void(absl::StatusOr<at::Tensor>)> fill);

// Like OnPool, for a `fill` that is light (Classify's softmax, top-k and reply): it runs on the
// executor thread itself when no request waits in `model`'s queue, so that at low load a reply
// does not pay a pool thread's wake-up (tens of microseconds); while requests wait, it goes to
// the pool, so the executor takes the next batch at once. Heavy fills (dense outputs) use
// OnPool. `model` must outlive the returned function's calls (the caller's handle does).
std::function<void(absl::StatusOr<at::Tensor>)> OnPoolWhileQueued(
    WorkPool* pool, const ServableModel& model,
    std::function<void(absl::StatusOr<at::Tensor>)> fill);

// The row limit of one task of `model` (its normalised batching.max_batch_size; >= 1).
int64_t MaxRowsPerTask(const ServableModel& model);

// Runs `input` ([N,...], N >= 1, CPU) through `model`'s batcher as ceil(N / MaxRowsPerTask)
// tasks and calls `done` exactly once: with the [N,...] concatenated outputs in input order, or
// with the first error (RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE while stopping,
// DEADLINE_EXCEEDED, CANCELLED, or the runner's error). If a later chunk cannot be queued, the
// chunks already queued still complete before `done` reports the error. With `announced`, the
// request was announced to `model` (ServableModel::AnnounceArrival) and this call ends that
// announcement. `output_columns` is each task's InferenceTask::output_columns (0: the model's
// default, its logits).
void ScheduleRows(const ServableModel& model, at::Tensor input, absl::Time deadline,
                  std::function<bool()> is_cancelled,
                  std::function<void(absl::StatusOr<at::Tensor>)> done, bool announced = false,
                  int64_t output_columns = 0);

}  // namespace vitserve
