#include "server/api/vision_service.h"

#include <ATen/ATen.h>

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/api/call_util.h"
#include "server/api/classify.h"
#include "server/api/grpc_status.h"
#include "server/api/model_description.h"
#include "server/metrics/server_metrics.h"

namespace vitserve {
namespace {

// Runs one ClassifyRequest on `model` and calls `finish` exactly once (on an executor thread, or
// inline when the request fails before it is queued) after filling `*response`. Records the
// request's metrics. `request` and `response` must stay alive until `finish` runs.
void RunClassify(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                 const v1::ClassifyRequest& request, absl::Time deadline,
                 std::function<bool()> is_cancelled, v1::ClassifyResponse* response,
                 std::function<void(absl::Status)> finish) {
  const absl::Time start = absl::Now();
  ModelMetrics& metrics = model.metrics();
  metrics.AddInflight(1);
  auto complete = [&metrics, start, finish = std::move(finish)](absl::Status status) {
    metrics.RecordRequest(status.code(), absl::Now() - start);
    metrics.AddInflight(-1);
    finish(std::move(status));
  };

  response->set_model(model.name());
  response->set_request_id(request.request_id());
  absl::StatusOr<int64_t> top_k =
      ValidateClassifyRequest(request, model.name(), model.info().task, model.info().num_classes,
                              VisionService::kDefaultTopK);
  if (!top_k.ok()) return complete(top_k.status());
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  // Decoding is the CPU-heavy part of a request: it runs on the pool, off gRPC's threads.
  auto decode_and_schedule = [&model, &limits, &request, &metrics, start, deadline, response,
                              is_cancelled = std::move(is_cancelled),
                              complete = std::move(complete), k = *top_k]() mutable {
    if (is_cancelled && is_cancelled()) {
      return complete(absl::CancelledError("the client cancelled the request"));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<at::Tensor> input =
        DecodeAndPreprocess(request.images(), limits, model.preprocess_spec());
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!input.ok()) return complete(input.status());

    const std::vector<std::string>* labels = &model.labels();
    ScheduleRows(model, *std::move(input), deadline, std::move(is_cancelled),
                 [complete = std::move(complete), k, labels,
                  response](absl::StatusOr<at::Tensor> logits) {
                   if (!logits.ok()) return complete(logits.status());
                   complete(FillClassifications(*logits, k, *labels, response));
                 });
  };
  if (pool == nullptr) return decode_and_schedule();
  pool->Schedule(std::move(decode_and_schedule));
}

std::function<bool()> CancellationOf(grpc::CallbackServerContext* context) {
  return [context] { return context->IsCancelled(); };
}

}  // namespace

// A unary call that holds its model handle until OnDone (a gRPC thread).
class VisionService::ClassifyReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit ClassifyReactor(std::shared_ptr<const ServableModel> model) : model_(std::move(model)) {}
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<const ServableModel> model_;
};

class VisionService::ClassifyStreamReactor final
    : public grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  ClassifyStreamReactor(ModelManager* manager, const ImageLimits& limits, WorkPool* pool,
                        grpc::CallbackServerContext* context)
      : manager_(manager), limits_(limits), pool_(pool), context_(context) {
    reading_ = true;
    StartRead(&read_request_);
  }

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
    auto item = std::make_shared<Item>();
    item->request = std::move(read_request_);
    read_request_.Clear();
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (finished_ || !error_.ok()) {  // The stream already failed: ignore what follows.
        reads_done_ = true;
        item = nullptr;
      } else {
        ++pending_;
      }
    }
    if (item != nullptr) Process(item);
    Pump();  // Reads the next request unless too many are pending or the stream failed.
  }

  void OnWriteDone(bool ok) override {
    std::vector<std::shared_ptr<const ServableModel>> retired;
    {
      absl::MutexLock lock(&mu_);
      writing_.reset();
      if (!ok && error_.ok()) {
        error_ = absl::CancelledError("the client stopped reading the stream");
      }
      retired.swap(retired_);
    }
    Pump();
  }

  void OnDone() override { delete this; }

 private:
  struct Item {
    v1::ClassifyRequest request;
    v1::ClassifyResponse response;
  };

  void Process(std::shared_ptr<Item> item) {
    absl::StatusOr<std::shared_ptr<const ServableModel>> model =
        manager_->Get(item->request.model());
    if (!model.ok()) return ItemDone(*item, nullptr, model.status());
    std::shared_ptr<const ServableModel> handle = *std::move(model);
    const ServableModel* raw = handle.get();
    {
      // Kept by the stream until a gRPC callback releases it (see ItemDone).
      absl::MutexLock lock(&mu_);
      held_.push_back(handle);
    }
    RunClassify(*raw, limits_, pool_, item->request, DeadlineOf(*context_), CancellationOf(context_),
                &item->response, [this, item, raw](absl::Status status) {
                  ItemDone(*item, raw, std::move(status));
                });
  }

  // Runs on an executor thread (or inline): queues the response or records the failure, moves the
  // item's model handle to retired_ (released on a gRPC thread), then writes or finishes.
  void ItemDone(Item& item, const ServableModel* model, absl::Status status) {
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
      if (status.ok()) {
        if (error_.ok()) write_queue_.push_back(std::move(item.response));
      } else if (error_.ok()) {
        error_ = absl::Status(
            status.code(),
            item.request.request_id().empty()
                ? std::string(status.message())
                : absl::StrCat("request_id ", item.request.request_id(), ": ", status.message()));
        write_queue_.clear();
      }
    }
    Pump();
  }

  // Decides under the lock, acts outside it: starts the next write and/or read, or Finishes.
  // Pump may run on an executor thread, which (unlike a gRPC reaction) does not keep the
  // reactor alive: `acting_` counts threads between deciding and issuing a Start*, and Finish
  // (after which OnDone may delete the reactor) waits until it is zero. The thread that
  // finishes touches nothing afterwards.
  void Pump() {
    bool acted = false;
    for (;;) {
      v1::ClassifyResponse* to_write = nullptr;
      bool read = false;
      grpc::Status finish_status;
      {
        absl::MutexLock lock(&mu_);
        if (acted) --acting_;
        acted = false;
        if (finished_) return;
        if (!writing_ && !write_queue_.empty() && error_.ok()) {
          writing_ = std::make_unique<v1::ClassifyResponse>(std::move(write_queue_.front()));
          write_queue_.pop_front();
          to_write = writing_.get();
        }
        if (!reading_ && !reads_done_ && error_.ok() && pending_ < kMaxPendingPerStream) {
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
        Finish(std::move(finish_status));
        return;
      }
      if (to_write != nullptr) StartWrite(to_write);
      if (read) StartRead(&read_request_);
    }
  }

  ModelManager* const manager_;
  const ImageLimits limits_;
  WorkPool* const pool_;
  grpc::CallbackServerContext* const context_;
  // Written only by the thread that started the read (reads are never concurrent).
  v1::ClassifyRequest read_request_;

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  int acting_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<v1::ClassifyResponse> writing_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::ClassifyResponse> write_queue_ ABSL_GUARDED_BY(mu_);
  // Model handles of requests in flight, and of finished ones waiting to be released on a gRPC
  // thread (OnWriteDone or OnDone).
  std::vector<std::shared_ptr<const ServableModel>> held_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<const ServableModel>> retired_ ABSL_GUARDED_BY(mu_);
};

VisionService::VisionService(ModelManager* manager, ImageLimits image_limits,
                             WorkPool* preprocess_pool)
    : manager_(manager), image_limits_(image_limits), preprocess_pool_(preprocess_pool) {}

grpc::ServerUnaryReactor* VisionService::Classify(grpc::CallbackServerContext* context,
                                                  const v1::ClassifyRequest* request,
                                                  v1::ClassifyResponse* response) {
  absl::StatusOr<std::shared_ptr<const ServableModel>> model = manager_->Get(request->model());
  if (!model.ok()) {
    auto* reactor = new ClassifyReactor(nullptr);
    reactor->Finish(ToGrpcStatus(model.status()));
    return reactor;
  }
  const ServableModel& served = **model;
  auto* reactor = new ClassifyReactor(*std::move(model));
  RunClassify(served, image_limits_, preprocess_pool_, *request, DeadlineOf(*context), CancellationOf(context),
              response, [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* VisionService::Detect(grpc::CallbackServerContext* context,
                                                const v1::DetectRequest* request,
                                                v1::DetectResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(
      grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                   "Detect is not implemented yet: no detection model is registered (planned)"));
  return reactor;
}

grpc::ServerUnaryReactor* VisionService::Segment(grpc::CallbackServerContext* context,
                                                 const v1::SegmentRequest* request,
                                                 v1::SegmentResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status(
      grpc::StatusCode::UNIMPLEMENTED,
      "Segment is not implemented yet: no segmentation model is registered (planned)"));
  return reactor;
}

grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>* VisionService::ClassifyStream(
    grpc::CallbackServerContext* context) {
  return new ClassifyStreamReactor(manager_, image_limits_, preprocess_pool_, context);
}

grpc::ServerUnaryReactor* VisionService::ListModels(grpc::CallbackServerContext* context,
                                                    const v1::ListModelsRequest* request,
                                                    v1::ListModelsResponse* response) {
  for (const ModelStatus& status : manager_->List()) {
    absl::StatusOr<std::shared_ptr<const ServableModel>> model =
        status.state == ModelState::kReady ? manager_->Get(status.name)
                                           : absl::UnavailableError("not ready");
    *response->add_models() = model.ok() ? DescribeModel(**model, status, /*with_labels=*/false)
                                         : DescribeUnloadedModel(status);
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* VisionService::GetModel(grpc::CallbackServerContext* context,
                                                  const v1::GetModelRequest* request,
                                                  v1::ModelDescription* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::vector<std::string> names;
  for (const ModelStatus& status : manager_->List()) {
    if (status.name != request->name()) {
      names.push_back(status.name);
      continue;
    }
    absl::StatusOr<std::shared_ptr<const ServableModel>> model =
        status.state == ModelState::kReady ? manager_->Get(status.name)
                                           : absl::UnavailableError("not ready");
    *response = model.ok() ? DescribeModel(**model, status, /*with_labels=*/true)
                           : DescribeUnloadedModel(status);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  reactor->Finish(grpc::Status(
      request->name().empty() ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::NOT_FOUND,
      absl::StrCat(request->name().empty() ? "no model name given"
                                           : "unknown model '" + request->name() + "'",
                   "; available models: ", absl::StrJoin(names, ", "))));
  return reactor;
}

}  // namespace vitserve
