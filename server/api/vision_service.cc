#include "server/api/vision_service.h"

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/api/call_util.h"
#include "server/api/classify.h"
#include "server/api/grpc_status.h"
#include "server/api/detect.h"
#include "server/api/image_input.h"
#include "server/api/model_description.h"
#include "server/api/segment.h"
#include "server/api/stream_reactor.h"
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
  std::function<void(absl::Status)> complete = TrackRequest(model, std::move(finish));

  response->set_model(model.name());
  response->set_request_id(request.request_id());
  absl::StatusOr<int64_t> top_k =
      ValidateClassifyRequest(request, model.name(), model.info().task, model.info().num_classes,
                              VisionService::kDefaultTopK);
  if (!top_k.ok()) return complete(top_k.status());
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  complete = AdmitRequest(model, std::move(complete));
  if (!complete) return;  // Overloaded: answered RESOURCE_EXHAUSTED, nothing decoded.
  // Decoding is the CPU-heavy part of a request: it runs on the pool, off gRPC's threads.
  // Announced meanwhile, so the batcher knows these rows are on their way.
  model.AnnounceArrival();
  auto decode_and_schedule = [&model, &limits, &request, &metrics, start, deadline, response, pool,
                              is_cancelled = std::move(is_cancelled),
                              complete = std::move(complete), k = *top_k]() mutable {
    if (absl::Status wanted = CheckStillWanted(deadline, is_cancelled); !wanted.ok()) {
      model.WithdrawArrival();
      return complete(std::move(wanted));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<at::Tensor> input =
        DecodeAndPreprocess(request.images(), limits, model.preprocess_spec());
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!input.ok()) {
      model.WithdrawArrival();
      return complete(input.status());
    }

    const std::vector<std::string>* labels = &model.labels();
    // Softmax, top-k and the reply run on the pool (OnPool), not on the executor thread.
    auto fill = [complete, k, labels, response](absl::StatusOr<at::Tensor> logits) {
      if (!logits.ok()) return complete(logits.status());
      complete(FillClassifications(*logits, k, *labels, response));
    };
    ScheduleRows(model, *std::move(input), deadline, std::move(is_cancelled),
                 OnPool(pool, std::move(fill)), /*announced=*/true);
  };
  if (pool == nullptr) return decode_and_schedule();
  pool->Schedule(std::move(decode_and_schedule));
}

// Fills a Detect or Segment response from the model's rows for its images.
using WholeImageFill =
    std::function<absl::Status(const at::Tensor& rows, const std::vector<InputGeometry>&)>;

// Runs one Detect or Segment request (a task on whole images) on `model`, like RunClassify:
// `valid` is the request's validation, done by the caller; the images are decoded whole and
// stretched to the model's input on the pool; `fill` runs on the pool after the batch. `request`
// and the response `fill` writes must stay alive until `finish` runs.
template <typename Request>
void RunWholeImageTask(const ServableModel& model, const ImageLimits& limits, WorkPool* pool,
                       const Request& request, absl::Status valid, absl::Time deadline,
                       std::function<bool()> is_cancelled, WholeImageFill fill,
                       std::function<void(absl::Status)> finish) {
  const absl::Time start = absl::Now();
  ModelMetrics& metrics = model.metrics();
  std::function<void(absl::Status)> complete = TrackRequest(model, std::move(finish));
  if (!valid.ok()) return complete(std::move(valid));
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  complete = AdmitRequest(model, std::move(complete));
  if (!complete) return;  // Overloaded: answered RESOURCE_EXHAUSTED, nothing decoded.
  model.AnnounceArrival();
  auto decode_and_schedule = [&model, &limits, &request, &metrics, deadline, pool,
                              is_cancelled = std::move(is_cancelled), fill = std::move(fill),
                              complete = std::move(complete)]() mutable {
    if (absl::Status wanted = CheckStillWanted(deadline, is_cancelled); !wanted.ok()) {
      model.WithdrawArrival();
      return complete(std::move(wanted));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<WholeImageBatch> batch = DecodeAndPreprocessWhole(
        request.images(), limits, model.preprocess_spec(), kDenseResizeMode);
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!batch.ok()) {
      model.WithdrawArrival();
      return complete(batch.status());
    }
    auto geometries = std::make_shared<std::vector<InputGeometry>>(std::move(batch->geometries));
    auto respond = [complete, geometries, fill](absl::StatusOr<at::Tensor> rows) {
      if (!rows.ok()) return complete(rows.status());
      complete(fill(*rows, *geometries));
    };
    ScheduleRows(model, std::move(batch->input), deadline, std::move(is_cancelled),
                 OnPool(pool, std::move(respond)), /*announced=*/true);
  };
  if (pool == nullptr) return decode_and_schedule();
  pool->Schedule(std::move(decode_and_schedule));
}

}  // namespace

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
                        grpc::CallbackServerContext* context)
      : StreamReactor(kMaxPendingPerStream),
        manager_(manager),
        limits_(limits),
        pool_(pool),
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
    RunClassify(*raw, limits_, pool_, item->request, DeadlineOf(*context_),
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
  grpc::CallbackServerContext* const context_;
};

VisionService::VisionService(ModelManager* manager, ImageLimits image_limits,
                             WorkPool* preprocess_pool)
    : manager_(manager), image_limits_(image_limits), preprocess_pool_(preprocess_pool) {}

grpc::ServerUnaryReactor* VisionService::Classify(grpc::CallbackServerContext* context,
                                                  const v1::ClassifyRequest* request,
                                                  v1::ClassifyResponse* response) {
  const ServableModel* model = nullptr;
  ModelCallReactor* reactor = StartModelCall(request->model(), &model);
  if (model == nullptr) return reactor;
  const ServableModel& served = *model;
  RunClassify(served, image_limits_, preprocess_pool_, *request, DeadlineOf(*context),
              CancellationOf(context), response,
              [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* VisionService::Detect(grpc::CallbackServerContext* context,
                                                const v1::DetectRequest* request,
                                                v1::DetectResponse* response) {
  const ServableModel* model = nullptr;
  ModelCallReactor* reactor = StartModelCall(request->model(), &model);
  if (model == nullptr) return reactor;
  const ServableModel& served = *model;
  response->set_model(served.name());
  response->set_request_id(request->request_id());
  absl::StatusOr<DetectSettings> settings = ValidateDetectRequest(
      *request, served.name(), served.info().task, served.config().detection());
  const DetectSettings chosen = settings.ok() ? *settings : DetectSettings();
  WholeImageFill fill = [&served, chosen, response](const at::Tensor& rows,
                                                    const std::vector<InputGeometry>& geometries) {
    return FillDetections(rows, served.info().num_classes, served.info().input_size, geometries,
                          chosen, served.labels(), response);
  };
  RunWholeImageTask(served, image_limits_, preprocess_pool_, *request, settings.status(),
                    DeadlineOf(*context), CancellationOf(context), std::move(fill),
                    [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerUnaryReactor* VisionService::Segment(grpc::CallbackServerContext* context,
                                                 const v1::SegmentRequest* request,
                                                 v1::SegmentResponse* response) {
  const ServableModel* model = nullptr;
  ModelCallReactor* reactor = StartModelCall(request->model(), &model);
  if (model == nullptr) return reactor;
  const ServableModel& served = *model;
  response->set_model(served.name());
  response->set_request_id(request->request_id());
  WholeImageFill fill = [&served, format = request->format(), response](
                            const at::Tensor& rows, const std::vector<InputGeometry>& geometries) {
    return FillSegmentations(rows, geometries, format, served.labels(), response);
  };
  RunWholeImageTask(served, image_limits_, preprocess_pool_, *request,
                    ValidateSegmentRequest(*request, served.name(), served.info().task),
                    DeadlineOf(*context), CancellationOf(context), std::move(fill),
                    [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
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
