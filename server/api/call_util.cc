#include "server/api/call_util.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/metrics/server_metrics.h"
#include "server/batching/inference_task.h"

namespace vitserve {
namespace {

// Completion state shared by the chunks of one call. Holds no model handle, so it may be
// destroyed on an executor thread.
struct SplitCall {
  absl::Mutex mu;
  int pending ABSL_GUARDED_BY(mu) = 0;
  std::vector<at::Tensor> outputs ABSL_GUARDED_BY(mu);
  absl::Status error ABSL_GUARDED_BY(mu);
  std::function<void(absl::StatusOr<at::Tensor>)> done;

  // Records one chunk's output.
  void ChunkDone(int chunk, absl::StatusOr<at::Tensor> result) {
    if (result.ok()) {
      {
        absl::MutexLock lock(&mu);
        outputs[chunk] = *std::move(result);
      }
      Release(1, absl::OkStatus());
    } else {
      Release(1, result.status());
    }
  }

  // Drops `count` references (chunks finished or never queued, or the scheduler's own), keeping
  // the first error; the last one completes the call, outside the lock.
  void Release(int count, absl::Status status) {
    absl::StatusOr<at::Tensor> final_result;
    {
      absl::MutexLock lock(&mu);
      if (!status.ok() && error.ok()) error = std::move(status);
      pending -= count;
      if (pending > 0) return;
      if (!error.ok()) {
        final_result = error;
      } else if (outputs.size() == 1) {
        final_result = std::move(outputs[0]);
      } else {
        final_result = at::cat(outputs, 0);
      }
      outputs.clear();
    }
    done(std::move(final_result));
  }
};

}  // namespace

std::function<bool()> CancellationOf(grpc::CallbackServerContext* context) {
  return [context] { return context->IsCancelled(); };
}

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  // No client deadline reads as system_clock::time_point::max() (or something close to it).
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 100)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

absl::Time CappedDeadline(absl::Time deadline, absl::Duration ceiling) {
  if (ceiling == absl::InfiniteDuration()) return deadline;
  return std::min(deadline, absl::Now() + ceiling);
}

absl::Status CheckStillWanted(absl::Time deadline, const std::function<bool()>& is_cancelled) {
  if (absl::Now() >= deadline) {
    return absl::DeadlineExceededError("the request's deadline passed before it was scheduled");
  }
  if (is_cancelled && is_cancelled()) {
    return absl::CancelledError("the client cancelled the request");
  }
  return absl::OkStatus();
}

std::function<void(absl::StatusOr<at::Tensor>)> OnPool(
    WorkPool* pool, std::function<void(absl::StatusOr<at::Tensor>)> fill) {
  if (pool == nullptr) return fill;
  return [pool, fill = std::move(fill)](absl::StatusOr<at::Tensor> result) {
    pool->ScheduleFirst([fill, result = std::move(result)]() { fill(result); });
  };
}

std::function<void(absl::StatusOr<at::Tensor>)> OnPoolWhileQueued(
    WorkPool* pool, const ServableModel& model,
    std::function<void(absl::StatusOr<at::Tensor>)> fill) {
  if (pool == nullptr) return fill;
  return [pool, &model, fill = std::move(fill)](absl::StatusOr<at::Tensor> result) {
    if (model.QueueDepth() == 0) return fill(std::move(result));
    pool->ScheduleFirst([fill, result = std::move(result)]() { fill(result); });
  };
}

int64_t MaxRowsPerTask(const ServableModel& model) {
  const int64_t max_batch = model.config().batching().max_batch_size();
  return max_batch > 0 ? max_batch : 1;
}

void ScheduleRows(const ServableModel& model, at::Tensor input, absl::Time deadline,
                  std::function<bool()> is_cancelled,
                  std::function<void(absl::StatusOr<at::Tensor>)> done, bool announced,
                  int64_t output_columns) {
  const int64_t rows = input.size(0);
  const int64_t per_task = MaxRowsPerTask(model);
  const int chunks = static_cast<int>((rows + per_task - 1) / per_task);

  auto call = std::make_shared<SplitCall>();
  call->done = std::move(done);
  {
    absl::MutexLock lock(&call->mu);
    call->pending = chunks + 1;  // +1: this function's own reference, released below.
    call->outputs.resize(chunks);
  }
  int scheduled = 0;
  for (; scheduled < chunks; ++scheduled) {
    auto task = std::make_unique<InferenceTask>();
    const int64_t begin = scheduled * per_task;
    const int64_t length = std::min(per_task, rows - begin);
    task->input = chunks == 1 ? input : input.narrow(0, begin, length).contiguous();
    task->deadline = deadline;
    task->is_cancelled = is_cancelled;
    task->output_columns = output_columns;
    // The last chunk ends the announcement: until it is queued, more rows are on their way.
    task->ends_announcement = announced && scheduled == chunks - 1;
    const int chunk = scheduled;
    task->on_done = [call, chunk](absl::StatusOr<at::Tensor> result) {
      call->ChunkDone(chunk, std::move(result));
    };
    absl::Status status = model.Schedule(&task);
    if (!status.ok()) {
      // This chunk and the ones after it never run (the last one's announcement ended in
      // Schedule; an earlier one's never reaches it).
      if (announced && scheduled < chunks - 1) model.WithdrawArrival();
      call->Release(chunks - scheduled, std::move(status));
      break;
    }
  }
  call->Release(1, absl::OkStatus());
}

std::function<void(absl::Status)> AdmitRequest(const ServableModel& model,
                                               std::function<void(absl::Status)> finish) {
  if (absl::Status admitted = model.Admit(); !admitted.ok()) {
    finish(std::move(admitted));
    return nullptr;
  }
  // `model` outlives the call (the caller holds its handle until the reactor's OnDone).
  return [&model, finish = std::move(finish)](absl::Status status) {
    model.EndAdmission();
    finish(std::move(status));
  };
}

std::function<void(absl::Status)> TrackRequest(const ServableModel& model,
                                               std::function<void(absl::Status)> finish) {
  ModelMetrics& metrics = model.metrics();
  const absl::Time start = absl::Now();
  metrics.AddInflight(1);
  return [&metrics, start, finish = std::move(finish)](absl::Status status) {
    metrics.RecordRequest(status.code(), absl::Now() - start);
    metrics.AddInflight(-1);
    finish(std::move(status));
  };
}

}  // namespace vitserve
