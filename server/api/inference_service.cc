#include "server/api/inference_service.h"

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/api/call_util.h"
#include "server/api/grpc_status.h"
#include "server/api/kserve_tensor.h"
#include "server/api/model_description.h"
#include "server/api/model_statistics.h"
#include "server/api/stream_reactor.h"
#include "server/metrics/server_metrics.h"

namespace vitserve {
namespace {

constexpr char kVersion[] = "1";

grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context,
                                     const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Triton's repository states: READY, LOADING, UNAVAILABLE (with the reason).
const char* RepositoryState(ModelState state) {
  switch (state) {
    case ModelState::kReady:
      return "READY";
    case ModelState::kLoading:
      return "LOADING";
    default:
      return "UNAVAILABLE";
  }
}

}  // namespace

// A ModelInfer call that holds its model handle until OnDone (a gRPC thread).
class InferenceService::InferReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit InferReactor(std::shared_ptr<const ServableModel> model) : model_(std::move(model)) {}
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<const ServableModel> model_;
};

namespace {

// Runs one ModelInfer request on `model` and calls `finish` exactly once (on an executor or pool
// thread, or inline when the request fails before it is queued) after filling `*response`.
// Records the request's metrics. `request` and `response` must stay alive until `finish` runs.
void RunModelInfer(const ServableModel& model, const inference::ModelInferRequest& request,
                   absl::Time deadline, std::function<bool()> is_cancelled, WorkPool* pool,
                   inference::ModelInferResponse* response,
                   std::function<void(absl::Status)> finish) {
  const absl::Time start = absl::Now();
  ModelMetrics& metrics = model.metrics();
  std::function<void(absl::Status)> complete = TrackRequest(model, std::move(finish));

  response->set_model_name(model.name());
  response->set_model_version(kVersion);
  response->set_id(request.id());
  if (model.info().task != ModelTask::kClassification) {
    return complete(absl::InvalidArgumentError(absl::StrCat(
        "model '", model.name(), "' is a ", std::string(ModelTaskName(model.info().task)),
        " model; ModelInfer serves classification models (output 'logits')")));
  }
  InferInputSpec spec;
  spec.input_size = ModelInputSize(model);
  spec.mean = ModelMean(model);
  spec.std = ModelStd(model);
  spec.max_batch_size = MaxRowsPerTask(model);
  absl::Status outputs_ok = ValidateRequestedOutputs(request);
  if (!outputs_ok.ok()) return complete(outputs_ok);
  if (start >= deadline) {
    return complete(absl::DeadlineExceededError("the request's deadline passed on arrival"));
  }
  complete = AdmitRequest(model, std::move(complete));
  if (!complete) return;  // Overloaded: answered RESOURCE_EXHAUSTED, nothing converted.
  // Converting the input (a copy of the whole batch; for UINT8 also the normalisation) is the
  // CPU-heavy part of the call: it runs on the preprocessing pool, off gRPC's threads, as
  // Classify's decoding does.
  model.AnnounceArrival();  // Ended by ScheduleRows or, on failure, withdrawn below.
  auto convert_and_schedule = [&model, &metrics, &request, response, spec, deadline, pool,
                               is_cancelled = std::move(is_cancelled),
                               complete = std::move(complete)]() mutable {
    if (absl::Status wanted = CheckStillWanted(deadline, is_cancelled); !wanted.ok()) {
      model.WithdrawArrival();
      return complete(std::move(wanted));
    }
    const absl::Time preprocess_start = absl::Now();
    absl::StatusOr<InferInput> input = ParseInferInput(request, spec);
    metrics.ObservePreprocess(absl::Now() - preprocess_start);
    if (!input.ok()) {
      model.WithdrawArrival();
      return complete(input.status());
    }
    // The reply is filled on the pool, off the model's executor thread (as Classify's).
    auto fill = [complete, response, batched = input->batched](absl::StatusOr<at::Tensor> logits) {
      if (!logits.ok()) return complete(logits.status());
      FillInferOutput(*logits, batched, response);
      complete(absl::OkStatus());
    };
    ScheduleRows(model, std::move(input->tensor), deadline, std::move(is_cancelled),
                 OnPool(pool, std::move(fill)), /*announced=*/true);
  };
  if (pool == nullptr) return convert_and_schedule();
  pool->Schedule(std::move(convert_and_schedule));
}

}  // namespace

// ModelStreamInfer, as Triton answers it for models that are not decoupled: one response per
// request, in completion order, each carrying the request's id. A failed request is answered
// in-band (error_message, with the gRPC code name first) and the stream goes on.
class InferenceService::StreamInferReactor final
    : public StreamReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse> {
 public:
  StreamInferReactor(const InferenceService* service, grpc::CallbackServerContext* context)
      : StreamReactor(kMaxPendingPerStream), service_(service), context_(context) {
    StartReading();
  }

 private:
  struct Item {
    inference::ModelInferRequest request;
    inference::ModelStreamInferResponse response;
  };

  void Process(inference::ModelInferRequest request) override {
    auto item = std::make_shared<Item>();
    item->request = std::move(request);
    auto model = service_->GetModel(item->request.model_name(), item->request.model_version());
    if (!model.ok()) return Done(*item, nullptr, model.status());
    const ServableModel* raw = model->get();
    HoldModel(*std::move(model));
    RunModelInfer(*raw, item->request, DeadlineOf(*context_),
                  CancellationOf(context_),
                  service_->preprocess_pool_, item->response.mutable_infer_response(),
                  [this, item, raw](absl::Status status) { Done(*item, raw, status); });
  }

  void Done(Item& item, const ServableModel* model, const absl::Status& status) {
    if (!status.ok()) {
      item.response.set_error_message(absl::StrCat(
          absl::StatusCodeToString(status.code()), ": ", status.message()));
      item.response.mutable_infer_response()->clear_outputs();
      item.response.mutable_infer_response()->clear_raw_output_contents();
      item.response.mutable_infer_response()->set_id(item.request.id());
    }
    Complete(model, std::move(item.response));
  }

  const InferenceService* const service_;
  grpc::CallbackServerContext* const context_;
};

InferenceService::InferenceService(ModelManager* manager, std::string version,
                                   WorkPool* preprocess_pool)
    : manager_(manager), version_(std::move(version)), preprocess_pool_(preprocess_pool) {}

absl::StatusOr<std::shared_ptr<const ServableModel>> InferenceService::GetModel(
    const std::string& name, const std::string& version) const {
  if (name.empty()) return absl::InvalidArgumentError("no model name given");
  if (!version.empty() && version != kVersion) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version '", version,
                                            "'; its only version is '", kVersion, "'"));
  }
  return manager_->Get(name);
}

grpc::ServerUnaryReactor* InferenceService::ServerLive(grpc::CallbackServerContext* context,
                                                       const inference::ServerLiveRequest*,
                                                       inference::ServerLiveResponse* response) {
  response->set_live(true);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerReady(grpc::CallbackServerContext* context,
                                                        const inference::ServerReadyRequest*,
                                                        inference::ServerReadyResponse* response) {
  response->set_ready(!shutting_down_.load() && manager_->AllReady());
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelReady(grpc::CallbackServerContext* context,
                                                       const inference::ModelReadyRequest* request,
                                                       inference::ModelReadyResponse* response) {
  bool ready = false;
  if (request->version().empty() || request->version() == kVersion) {
    for (const ModelStatus& status : manager_->List()) {
      if (status.name == request->name()) ready = status.state == ModelState::kReady;
    }
  }
  response->set_ready(ready);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name("vitserve");
  response->set_version(version_);
  for (const char* extension : kExtensions) response->add_extensions(extension);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  auto model = GetModel(request->name(), request->version());
  if (!model.ok()) return FinishWith(context, model.status());
  const int64_t size = ModelInputSize(**model);
  response->set_name((*model)->name());
  response->add_versions(kVersion);
  response->set_platform(kPlatform);
  auto* input = response->add_inputs();
  input->set_name(kKServeInputName);
  input->set_datatype("FP32");
  for (int64_t d : {int64_t{-1}, int64_t{3}, size, size}) input->add_shape(d);
  auto* output = response->add_outputs();
  output->set_name(kKServeOutputName);
  output->set_datatype("FP32");
  output->add_shape(-1);
  output->add_shape((*model)->info().num_classes);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelConfig(
    grpc::CallbackServerContext* context, const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  auto model = GetModel(request->name(), request->version());
  if (!model.ok()) return FinishWith(context, model.status());
  const ServableModel& m = **model;
  const v1::ModelConfig& config = m.config();
  const int64_t size = ModelInputSize(m);

  inference::ModelConfig* out = response->mutable_config();
  out->set_name(m.name());
  out->set_platform(kPlatform);
  out->set_backend(kBackend);
  out->set_max_batch_size(static_cast<int32_t>(MaxRowsPerTask(m)));
  auto* input = out->add_input();
  input->set_name(kKServeInputName);
  input->set_data_type(inference::TYPE_FP32);
  input->set_format(inference::ModelInput::FORMAT_NCHW);
  for (int64_t d : {int64_t{3}, size, size}) input->add_dims(d);
  auto* output = out->add_output();
  output->set_name(kKServeOutputName);
  output->set_data_type(inference::TYPE_FP32);
  output->add_dims(m.info().num_classes);

  auto* group = out->add_instance_group();
  group->set_name(absl::StrCat(m.name(), "_0"));
  group->set_count(config.instance_count() > 0 ? static_cast<int32_t>(config.instance_count()) : 1);
  const std::string& device = config.device();
  if (device.rfind("cuda", 0) == 0) {
    group->set_kind(inference::ModelInstanceGroup::KIND_GPU);
    const size_t colon = device.find(':');
    group->add_gpus(colon == std::string::npos ? 0 : std::atoi(device.c_str() + colon + 1));
  } else {
    group->set_kind(inference::ModelInstanceGroup::KIND_CPU);
  }

  auto* batching = out->mutable_dynamic_batching();
  for (uint32_t size : config.batching().preferred_batch_sizes()) {
    batching->add_preferred_batch_size(static_cast<int32_t>(size));
  }
  batching->set_max_queue_delay_microseconds(config.batching().max_queue_delay_us());

  auto& parameters = *out->mutable_parameters();
  parameters["architecture"].set_string_value(config.architecture());
  parameters["precision"].set_string_value(PrecisionName(config.precision()));
  parameters["device"].set_string_value(device);
  parameters["uint8_input"].set_string_value(
      "UINT8 inputs are raw RGB pixels; the server divides by 255 and normalises them");
  if (m.random_weights()) {
    parameters["warning"].set_string_value(
        "serving RANDOM (untrained) weights: predictions are meaningless");
  }
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  if (!request->name().empty()) {
    auto model = GetModel(request->name(), request->version());
    if (!model.ok()) return FinishWith(context, model.status());
    FillModelStatistics(**model, kVersion, response->add_model_stats());
    return FinishWith(context, absl::OkStatus());
  }
  for (const ModelStatus& status : manager_->List()) {
    if (status.state != ModelState::kReady) continue;
    auto model = manager_->Get(status.name);
    if (model.ok()) FillModelStatistics(**model, kVersion, response->add_model_stats());
  }
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  for (const ModelStatus& status : manager_->List()) {
    if (request->ready() && status.state != ModelState::kReady) continue;
    auto* index = response->add_models();
    index->set_name(status.name);
    index->set_version(kVersion);
    index->set_state(RepositoryState(status.state));
    index->set_reason(status.reason);
  }
  return FinishWith(context, absl::OkStatus());
}

// Loading builds and warms a model (seconds): done on its own thread so that no gRPC callback
// thread blocks. The manager outlives the call because VitServer shuts the gRPC server down
// (which waits for every call to finish) before the manager.
grpc::ServerUnaryReactor* InferenceService::RepositoryModelLoad(
    grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::thread([manager = manager_, name = request->model_name(), reactor] {
    reactor->Finish(ToGrpcStatus(manager->Load(name)));
  }).detach();
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::RepositoryModelUnload(
    grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::thread([manager = manager_, name = request->model_name(), reactor] {
    reactor->Finish(ToGrpcStatus(manager->Unload(name)));
  }).detach();
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ModelInfer(grpc::CallbackServerContext* context,
                                                       const inference::ModelInferRequest* request,
                                                       inference::ModelInferResponse* response) {
  auto model = GetModel(request->model_name(), request->model_version());
  if (!model.ok()) return FinishWith(context, model.status());
  const ServableModel& served = **model;
  auto* reactor = new InferReactor(*std::move(model));
  RunModelInfer(served, *request, DeadlineOf(*context), CancellationOf(context), preprocess_pool_,
                response,
                [reactor](absl::Status status) { reactor->Finish(ToGrpcStatus(status)); });
  return reactor;
}

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
InferenceService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  return new StreamInferReactor(this, context);
}

}  // namespace vitserve
