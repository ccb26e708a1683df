#include "server/api/vision_service.h"

#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/api/call_util.h"
#include "server/api/deferred_classify.h"
#include "server/api/grpc_status.h"
#include "server/api/model_description.h"
#include "server/api/raw_unary_call.h"
#include "server/api/stream_reactor.h"
#include "server/api/task_calls.h"
#include "server/metrics/server_metrics.h"

namespace vitserve {

// A unary call that holds its model handle until OnDone (a gRPC thread).
class VisionService::ModelCallReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit ModelCallReactor(std::shared_ptr<const ServableModel> model)
      : model_(std::move(model)) {}
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<const ServableModel> model_;
};

VisionService::ModelCallReactor* VisionService::StartModelCall(const std::string& name,
                                                              const ServableModel** model) {
  absl::StatusOr<std::shared_ptr<const ServableModel>> found = manager_->Get(name);
  if (!found.ok()) {
    *model = nullptr;
    auto* reactor = new ModelCallReactor(nullptr);
    reactor->Finish(ToGrpcStatus(found.status()));
    return reactor;
  }
  *model = found->get();
  return new ModelCallReactor(*std::move(found));
}

// ClassifyStream: StreamReactor (server/api/stream_reactor.h) running RunClassify per request;
// the first failing request ends the stream with its status, prefixed with its request_id.
class VisionService::ClassifyStreamReactor final
    : public StreamReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  ClassifyStreamReactor(ModelManager* manager, const ImageLimits& limits, WorkPool* pool,
                        absl::Duration max_request_time, grpc::CallbackServerContext* context)
      : StreamReactor(kMaxPendingPerStream),
        manager_(manager),
        limits_(limits),
        pool_(pool),
        max_request_time_(max_request_time),
        context_(context) {
    StartReading();
  }

 private:
  struct Item {
    v1::ClassifyRequest request;
    v1::ClassifyResponse response;
  };

  void Process(v1::ClassifyRequest request) override {
    auto item = std::make_shared<Item>();
    item->request = std::move(request);
    absl::StatusOr<std::shared_ptr<const ServableModel>> model =
        manager_->Get(item->request.model());
    if (!model.ok()) return Done(*item, nullptr, model.status());
    const ServableModel* raw = model->get();
    HoldModel(*std::move(model));
    RunClassify(*raw, limits_, pool_, item->request,
                CappedDeadline(DeadlineOf(*context_), max_request_time_),
                CancellationOf(context_), &item->response,
                [this, item, raw](absl::Status status) { Done(*item, raw, std::move(status)); });
  }

  void Done(Item& item, const ServableModel* model, const absl::Status& status) {
    if (status.ok()) return Complete(model, std::move(item.response));
    Complete(model, absl::Status(status.code(),
                                 item.request.request_id().empty()
                                     ? std::string(status.message())
                                     : absl::StrCat("request_id ", item.request.request_id(),
                                                    ": ", status.message())));
  }

  ModelManager* const manager_;
  const ImageLimits limits_;
  WorkPool* const pool_;
  const absl::Duration max_request_time_;
  grpc::CallbackServerContext* const context_;
};

VisionService::VisionService(ModelManager* manager, ImageLimits image_limits,
                             WorkPool* preprocess_pool, absl::Duration max_request_time)
    : manager_(manager),
      image_limits_(image_limits),
      max_request_time_(max_request_time),
      preprocess_pool_(preprocess_pool) {}

grpc::ServerUnaryReactor* VisionService::Classify(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request_bytes,
                                                  grpc::ByteBuffer* response_bytes) {
  using ClassifyCall =
      RawUnaryCall<v1::ClassifyRequest, v1::ClassifyResponse, DeferredClassifyRequest>;
  auto* call = new ClassifyCall(response_bytes);
  call->deferred = ReadDeferredClassifyRequest(*request_bytes);
  if (!call->deferred.has_value()) {
    if (absl::Status parsed = call->ParseWhole(*request_bytes); !parsed.ok()) {
      call->Answer(parsed);
      return call;
    }
  }
  absl::StatusOr<std::shared_ptr<const ServableModel>> model =
      manager_->Get(call->fields().model());
  if (!model.ok()) {
    call->Answer(model.status());
    return call;
  }
  call->model = *std::move(model);
  const ServableModel& served = *call->model;
  // Pixels left in the buffer suit only a model that takes them as one copy; for any other the
  // request is parsed whole after all (decoding or preprocessing on the CPU dwarfs that).
  if (call->deferred.has_value() &&
      !TakesDeferredPixels(*call->deferred, served.preprocess_spec())) {
    if (absl::Status parsed = call->ParseWhole(*request_bytes); !parsed.ok()) {
      call->Answer(parsed);
      return call;
    }
  }
  ClassifyInputFn input;
  if (call->deferred.has_value()) {
    // Run inline by RunClassify, while gRPC still holds the request's bytes.
    input = [call, request_bytes, &served, this]() {
      return DeferredPixelsInput(*call->deferred, *request_bytes, image_limits_,
                                 served.preprocess_spec());
    };
  }
  RunClassify(served, image_limits_, preprocess_pool_, call->fields(),
              CappedDeadline(DeadlineOf(*context), max_request_time_), CancellationOf(context),
              &call->response, [call](absl::Status status) { call->Answer(status); },
              std::move(input));
  return call;
}

grpc::ServerUnaryReactor* VisionService::Detect(grpc::CallbackServerContext* context,
                                                const v1::DetectRequest* request,
                                                v1::DetectResponse* response) {
  const ServableModel* model = nullptr;
  ModelCallReactor* reactor = StartModelCall(request->model(), &model);
  if (model == nullptr) return reactor;
  RunDetect(*model, image_limits_, preprocess_pool_, *request,
            CappedDeadline(DeadlineOf(*context), max_request_time_),
            CancellationOf(context), response,
            [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* VisionService::Segment(grpc::CallbackServerContext* context,
                                                 const v1::SegmentRequest* request,
                                                 v1::SegmentResponse* response) {
  const ServableModel* model = nullptr;
  ModelCallReactor* reactor = StartModelCall(request->model(), &model);
  if (model == nullptr) return reactor;
  RunSegment(*model, image_limits_, preprocess_pool_, *request,
             CappedDeadline(DeadlineOf(*context), max_request_time_),
             CancellationOf(context), response,
             [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>* VisionService::ClassifyStream(
    grpc::CallbackServerContext* context) {
  return new ClassifyStreamReactor(manager_, image_limits_, preprocess_pool_, max_request_time_,
                                   context);
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
