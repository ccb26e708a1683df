#include "server/api/inference_service.h"

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/api/call_util.h"
#include "server/api/deferred_infer.h"
#include "server/api/grpc_status.h"
#include "server/api/kserve_metadata.h"
#include "server/api/kserve_tensor.h"
#include "server/api/model_description.h"
#include "server/api/model_statistics.h"
#include "server/api/raw_unary_call.h"
#include "server/api/stream_reactor.h"
#include "server/api/task_calls.h"
#include "server/metrics/server_metrics.h"
#include "server/runtime/device.h"

namespace vitserve {
namespace {

grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context,
                                     const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// The raw contents `deferred` left in `bytes`; nothing when the request was parsed whole.
// RunModelInfer copies them before it finishes the request, while gRPC still holds `bytes`.
std::optional<ExternalRawInputs> RawInputsIfDeferred(
    const std::optional<DeferredInferRequest>& deferred, const grpc::ByteBuffer* bytes) {
  if (!deferred.has_value()) return std::nullopt;
  return RawInputsOf(*deferred, bytes);
}

}  // namespace

// ModelStreamInfer, as Triton answers it for models that are not decoupled: one response per
// request, in completion order, each carrying the request's id. A failed request is answered
// in-band (error_message, with the gRPC code name first) and the stream goes on.
class InferenceService::StreamInferReactor final
    : public StreamReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  StreamInferReactor(const InferenceService* service, grpc::CallbackServerContext* context)
      : StreamReactor(kMaxPendingPerStream), service_(service), context_(context) {
    StartReading();
  }

 private:
  // One request of the stream, alive until its response is handed to Complete().
  struct Item {
    grpc::ByteBuffer bytes;  // As read; raw contents left here are copied from it.
    std::optional<DeferredInferRequest> deferred;
    inference::ModelInferRequest request;  // Parsed whole when `deferred` is not set.
    inference::ModelStreamInferResponse response;

    const inference::ModelInferRequest& fields() const {
      return deferred.has_value() ? deferred->request : request;
    }
  };

  void Process(grpc::ByteBuffer bytes) override {
    auto item = std::make_shared<Item>();
    item->bytes = std::move(bytes);
    item->deferred = ReadDeferredInferRequest(item->bytes);
    if (!item->deferred.has_value()) {
      if (absl::Status parsed = ParseWholeMessage(item->bytes, &item->request); !parsed.ok()) {
        return Done(*item, nullptr, parsed);
      }
    }
    auto model = service_->GetModel(item->fields().model_name(), item->fields().model_version());
    if (!model.ok()) return Done(*item, nullptr, model.status());
    const ServableModel* raw = model->get();
    HoldModel(*std::move(model));
    service_->RunInfer(*raw, item->fields(), context_,
                       RawInputsIfDeferred(item->deferred, &item->bytes),
                       item->response.mutable_infer_response(),
                       [this, item, raw](absl::Status status) { Done(*item, raw, status); });
  }

  void Done(Item& item, const ServableModel* model, const absl::Status& status) {
    if (!status.ok()) {
      item.response.set_error_message(absl::StrCat(
          absl::StatusCodeToString(status.code()), ": ", status.message()));
      item.response.mutable_infer_response()->clear_outputs();
      item.response.mutable_infer_response()->clear_raw_output_contents();
      item.response.mutable_infer_response()->set_id(item.fields().id());
    }
    Complete(model, SerializedMessage(item.response));
  }

  const InferenceService* const service_;
  grpc::CallbackServerContext* const context_;
};

InferenceService::InferenceService(ModelManager* manager, std::string version,
                                   WorkPool* preprocess_pool, absl::Duration max_request_time,
                                   SharedMemoryRegistry* shared_memory)
    : manager_(manager),
      version_(std::move(version)),
      preprocess_pool_(preprocess_pool),
      max_request_time_(max_request_time),
      shared_memory_(shared_memory != nullptr ? shared_memory : &no_shared_memory_) {}

absl::StatusOr<std::shared_ptr<const ServableModel>> InferenceService::GetModel(
    const std::string& name, const std::string& version) const {
  return GetVersionedModel(*manager_, name, version);
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
  response->set_ready(IsModelReady(*manager_, request->name(), request->version()));
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  FillServerMetadata(version_, response);
  if (shared_memory_->enabled()) response->add_extensions(kKServeSystemSharedMemory);
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  auto model = GetModel(request->name(), request->version());
  if (model.ok()) FillModelMetadata(**model, response);
  return FinishWith(context, model.status());
}

grpc::ServerUnaryReactor* InferenceService::ModelConfig(
    grpc::CallbackServerContext* context, const inference::ModelConfigRequest* request,
    inference::ModelConfigResponse* response) {
  auto model = GetModel(request->name(), request->version());
  if (model.ok()) FillModelConfig(**model, response);
  return FinishWith(context, model.status());
}

grpc::ServerUnaryReactor* InferenceService::ModelStatistics(
    grpc::CallbackServerContext* context, const inference::ModelStatisticsRequest* request,
    inference::ModelStatisticsResponse* response) {
  return FinishWith(context, FillStatisticsResponse(*manager_, request->name(),
                                                    request->version(), response));
}

grpc::ServerUnaryReactor* InferenceService::RepositoryIndex(
    grpc::CallbackServerContext* context, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  FillRepositoryIndex(*manager_, request->ready(), response);
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
    RunTorchSeriallyOnThisThread();  // Why: RunTorchSeriallyOnThisThread's comment.
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
                                                       const grpc::ByteBuffer* request_bytes,
                                                       grpc::ByteBuffer* response_bytes) {
  using InferCall = RawUnaryCall<inference::ModelInferRequest, inference::ModelInferResponse,
                                 DeferredInferRequest>;
  auto* call = new InferCall(response_bytes);
  call->deferred = ReadDeferredInferRequest(*request_bytes);
  if (!call->deferred.has_value()) {
    if (absl::Status parsed = call->ParseWhole(*request_bytes); !parsed.ok()) {
      call->Answer(parsed);
      return call;
    }
  }
  auto model = GetModel(call->fields().model_name(), call->fields().model_version());
  if (!model.ok()) {
    call->Answer(model.status());
    return call;
  }
  call->model = *std::move(model);
  RunInfer(*call->model, call->fields(), context,
           RawInputsIfDeferred(call->deferred, request_bytes), &call->response,
           [call](absl::Status status) { call->Answer(status); });
  return call;
}

void InferenceService::RunInfer(const ServableModel& model,
                                const inference::ModelInferRequest& fields,
                                grpc::CallbackServerContext* context,
                                std::optional<ExternalRawInputs> raw_inputs,
                                inference::ModelInferResponse* response,
                                FinishCallback finish) const {
  const bool has_raw_contents = raw_inputs.has_value() || fields.raw_input_contents_size() > 0;
  absl::StatusOr<SharedMemoryBindings> shared = BindSharedMemory(fields, has_raw_contents,
                                                                 *shared_memory_);
  if (!shared.ok()) return finish(shared.status());
  if (shared->input.has_value()) raw_inputs = std::move(shared->input);
  PlaceOutputsFn place_outputs;
  if (!shared->outputs.empty()) {
    // Holds the output windows' mappings until the reply is placed.
    place_outputs = [bindings = std::make_shared<const SharedMemoryBindings>(*std::move(shared))](
                        inference::ModelInferResponse* filled) {
      return PlaceOutputsInSharedMemory(*bindings, filled);
    };
  }
  RunModelInfer(model, fields, CappedDeadline(DeadlineOf(*context), max_request_time_),
                CancellationOf(context), preprocess_pool_, response, std::move(finish),
                std::move(raw_inputs), std::move(place_outputs));
}

grpc::ServerUnaryReactor* InferenceService::SystemSharedMemoryStatus(
    grpc::CallbackServerContext* context, const inference::SystemSharedMemoryStatusRequest* request,
    inference::SystemSharedMemoryStatusResponse* response) {
  return FinishWith(context, shared_memory_->Status(request->name(), response));
}

grpc::ServerUnaryReactor* InferenceService::SystemSharedMemoryRegister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryRegisterRequest* request,
    inference::SystemSharedMemoryRegisterResponse*) {
  return FinishWith(context, shared_memory_->Register(request->name(), request->key(),
                                                      request->offset(), request->byte_size()));
}

grpc::ServerUnaryReactor* InferenceService::SystemSharedMemoryUnregister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryUnregisterRequest* request,
    inference::SystemSharedMemoryUnregisterResponse*) {
  shared_memory_->Unregister(request->name());
  return FinishWith(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* InferenceService::CudaSharedMemoryStatus(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryStatusRequest* request,
    inference::CudaSharedMemoryStatusResponse*) {
  // No CUDA region can be registered, so the status of all of them is empty.
  return FinishWith(context, request->name().empty()
                                 ? absl::OkStatus()
                                 : absl::NotFoundError(absl::StrCat(
                                       "CUDA shared memory region '", request->name(),
                                       "' is not registered")));
}

grpc::ServerUnaryReactor* InferenceService::CudaSharedMemoryRegister(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryRegisterRequest*,
    inference::CudaSharedMemoryRegisterResponse*) {
  return FinishWith(context, absl::UnimplementedError(
                                 "vitserve does not take CUDA shared memory; register system "
                                 "shared memory (SystemSharedMemoryRegister) instead"));
}

grpc::ServerUnaryReactor* InferenceService::CudaSharedMemoryUnregister(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryUnregisterRequest*,
    inference::CudaSharedMemoryUnregisterResponse*) {
  return FinishWith(context, absl::OkStatus());  // None registered: nothing to drop.
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* InferenceService::ModelStreamInfer(
    grpc::CallbackServerContext* context) {
  return new StreamInferReactor(this, context);
}

}  // namespace vitserve
