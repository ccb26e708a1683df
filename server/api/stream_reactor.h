// StreamReactor<Request, Response>: the machinery of a bidirectional inference stream, shared by
// Vision's ClassifyStream and KServe's ModelStreamInfer.
//
// It reads requests one at a time and hands each to Process() (on the gRPC thread that read
// it); up to `max_pending` requests are in the server at once, beyond which reads pause. Each
// request ends with exactly one Complete(): a response, written as soon as the gRPC write slot is
// free (so responses may be in another order than their requests), or an error that ends the
// stream. After an error no further request is read or started; responses that had already
// completed are still written, then the stream finishes with the error. Without an error the
// stream finishes OK once the client half-closed and every response is written.
//
// Model handles: a request that holds a ServableModel handle passes it to HoldModel() and its raw
// pointer to Complete(). The handle is then released on a gRPC thread (OnWriteDone or OnDone),
// never on the executor thread that ran Complete(): dropping the last handle there would join
// that thread from itself (see ServableModel's contract in server/model_manager.h).
//
// Ownership: gRPC owns the reactor; it deletes itself in OnDone. A subclass starts the stream by
// calling StartReading() at the end of its constructor.
// Thread-safety: Complete() and HoldModel() may be called from any thread; everything else runs
// on gRPC's threads. `acting_` keeps Finish() (after which OnDone may delete the reactor) from
// racing with a thread that decided to start a read or write but has not done so yet.
#pragma once

#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_callback.h"
#include "server/api/grpc_status.h"

namespace vitserve {

class ServableModel;  // server/model_manager.h; only held and compared here.

template <typename Request, typename Response>
class StreamReactor : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit StreamReactor(int max_pending) : max_pending_(max_pending) {}
  ~StreamReactor() override = default;

  void OnReadDone(bool ok) override {
    if (!ok) {  // The client half-closed (or the call ended).
      {
        absl::MutexLock lock(&mu_);
        reading_ = false;
        reads_done_ = true;
      }
      Pump();
      return;
    }
    Request request = std::move(read_request_);
    read_request_.Clear();
    bool process = false;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (finished_ || !error_.ok()) {  // The stream already failed: ignore what follows.
        reads_done_ = true;
      } else {
        ++pending_;
        process = true;
      }
    }
    if (process) Process(std::move(request));
    Pump();  // Reads the next request unless too many are pending or the stream failed.
  }

  void OnWriteDone(bool ok) override {
    std::vector<std::shared_ptr<const ServableModel>> retired;
    {
      absl::MutexLock lock(&mu_);
      writing_.reset();
      if (!ok) {
        write_failed_ = true;
        if (error_.ok()) error_ = absl::CancelledError("the client stopped reading the stream");
      }
      retired.swap(retired_);
    }
    Pump();
  }  // `retired` handles are released here, on a gRPC thread.

  void OnDone() override { delete this; }

 protected:
  // Starts processing one request; must lead to exactly one Complete(), from any thread.
  virtual void Process(Request request) = 0;

  // Starts the stream; call once, at the end of the subclass's constructor.
  void StartReading() {
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    this->StartRead(&read_request_);
  }

  // Keeps `model` alive until the request using it completes and a gRPC thread releases it.
  void HoldModel(std::shared_ptr<const ServableModel> model) {
    absl::MutexLock lock(&mu_);
    held_.push_back(std::move(model));
  }

  // Ends one request: writes `result`'s response, or ends the stream with its error. `model` is
  // the raw pointer of the handle given to HoldModel (null when none was).
  void Complete(const ServableModel* model, absl::StatusOr<Response> result) {
    {
      absl::MutexLock lock(&mu_);
      --pending_;
      if (model != nullptr) {
        for (auto it = held_.begin(); it != held_.end(); ++it) {
          if (it->get() == model) {
            retired_.push_back(std::move(*it));
            held_.erase(it);
            break;
          }
        }
      }
      if (result.ok()) {
        if (error_.ok()) write_queue_.push_back(*std::move(result));
      } else if (error_.ok()) {
        error_ = result.status();
      }
      // This thread is not a gRPC reaction: once the lock is released, a reaction could see
      // the stream idle, finish it, and gRPC delete the reactor before this thread's Pump
      // runs. Acting from here on keeps the stream open until that Pump has decided.
      ++acting_;
    }
    Pump(/*already_acting=*/true);
  }

 private:
  // Decides under the lock, acts outside it: starts the next write and/or read, or finishes.
  // Pump may run on an executor thread, which (unlike a gRPC reaction) does not keep the reactor
  // alive: `acting_` counts threads between deciding and issuing a Start*, and Finish waits
  // until it is zero. The thread that finishes touches nothing afterwards. already_acting: the
  // caller counted itself in `acting_` (Complete, from its own critical section).
  void Pump(bool already_acting = false) {
    bool acted = already_acting;
    for (;;) {
      Response* to_write = nullptr;
      bool read = false;
      grpc::Status finish_status;
      {
        absl::MutexLock lock(&mu_);
        if (acted) --acting_;
        acted = false;
        if (finished_) return;
        if (write_failed_) write_queue_.clear();
        if (!writing_ && !write_queue_.empty()) {
          writing_ = std::make_unique<Response>(std::move(write_queue_.front()));
          write_queue_.pop_front();
          to_write = writing_.get();
        }
        if (!reading_ && !reads_done_ && error_.ok() && pending_ < max_pending_) {
          reading_ = true;
          read = true;
        }
        if (to_write != nullptr || read) {
          ++acting_;
          acted = true;
        } else {
          const bool idle = pending_ == 0 && !writing_ && write_queue_.empty() && acting_ == 0;
          if (!idle || (!reads_done_ && error_.ok())) return;
          finished_ = true;
          finish_status = ToGrpcStatus(error_);
        }
      }
      if (!acted) {
        this->Finish(std::move(finish_status));
        return;
      }
      if (to_write != nullptr) this->StartWrite(to_write);
      if (read) this->StartRead(&read_request_);
    }
  }

  const int max_pending_;
  // Written only by the thread that started the read (reads are never concurrent).
  Request read_request_;

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  int acting_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Response> writing_ ABSL_GUARDED_BY(mu_);
  std::deque<Response> write_queue_ ABSL_GUARDED_BY(mu_);
  // Model handles of requests in flight, and of completed ones waiting to be released on a gRPC
  // thread (OnWriteDone or OnDone, through the destructor).
  std::vector<std::shared_ptr<const ServableModel>> held_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<const ServableModel>> retired_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vitserve
