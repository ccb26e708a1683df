// inference.GRPCInferenceService: the KServe v2 / Open Inference Protocol with Triton's
// ModelConfig, ModelStatistics and model-repository extensions, as tritonclient and Triton's
// perf_analyzer expect them (method paths /inference.GRPCInferenceService/...).
//
// Every model has exactly one version, "1" (an empty version means it too). The tensor
// conventions of ModelInfer (input "input" FP32/FP16/UINT8 [N,3,S,S], output "logits" FP32
// [N,num_classes]) are described in server/api/kserve_tensor.h. ModelStreamInfer answers each
// request of the stream as ModelInfer would, in completion order; a failed request gets an
// in-band error_message ("NOT_FOUND: ...") and the stream goes on, as in Triton.
//
// Errors: NOT_FOUND (unknown model or version), UNAVAILABLE (model not ready, shutting down),
// INVALID_ARGUMENT (tensor name/datatype/shape/size), RESOURCE_EXHAUSTED (queue full),
// DEADLINE_EXCEEDED, CANCELLED; repository load/unload pass on the ModelManager's status
// (FAILED_PRECONDITION in quick mode).
// Ownership: borrows the ModelManager and the preprocessing WorkPool, which must outlive the
// grpc::Server. ModelInfer holds its model handle in its reactor until OnDone (a gRPC thread);
// its input conversion runs on the pool, so a large UINT8 batch does not hold a gRPC thread.
// Thread-safety: called by gRPC from any number of threads; SetShuttingDown from any thread.
#pragma once

#include <atomic>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/api/kserve_metadata.h"
#include "server/api/shared_memory.h"
#include "server/api/task_calls.h"
#include "server/api/work_pool.h"
#include "server/model_manager.h"

namespace vitserve {

// The generated CallbackService with ModelInfer and ModelStreamInfer as raw methods (gRPC hands
// over the requests' bytes, whose raw_input_contents are then read from gRPC's buffer straight
// into the model's input: deferred_infer.h). Spelt out because a raw bidirectional method cannot
// be layered over the typed one (their reactors' return types conflict); a method added to the
// proto must be added here too.
namespace inference_service_internal {
using Kserve = inference::GRPCInferenceService;
// clang-format off
using Base =
    Kserve::WithCallbackMethod_ServerLive<Kserve::WithCallbackMethod_ServerReady<
    Kserve::WithCallbackMethod_ModelReady<Kserve::WithCallbackMethod_ServerMetadata<
    Kserve::WithCallbackMethod_ModelMetadata<Kserve::WithRawCallbackMethod_ModelInfer<
    Kserve::WithRawCallbackMethod_ModelStreamInfer<Kserve::WithCallbackMethod_ModelConfig<
    Kserve::WithCallbackMethod_ModelStatistics<Kserve::WithCallbackMethod_RepositoryIndex<
    Kserve::WithCallbackMethod_RepositoryModelLoad<Kserve::WithCallbackMethod_RepositoryModelUnload<
    Kserve::WithCallbackMethod_SystemSharedMemoryStatus<
    Kserve::WithCallbackMethod_SystemSharedMemoryRegister<
    Kserve::WithCallbackMethod_SystemSharedMemoryUnregister<
    Kserve::WithCallbackMethod_CudaSharedMemoryStatus<
    Kserve::WithCallbackMethod_CudaSharedMemoryRegister<
    Kserve::WithCallbackMethod_CudaSharedMemoryUnregister<
    Kserve::Service>>>>>>>>>>>>>>>>>>;
// clang-format on
}  // namespace inference_service_internal

class InferenceService final : public inference_service_internal::Base {
 public:
  // Requests of one ModelStreamInfer stream being processed at once, beyond which reads pause.
  static constexpr int kMaxPendingPerStream = 32;

  // `version`: the server version reported by ServerMetadata. `preprocess_pool` (borrowed, may
  // be null: then inline on gRPC's thread) converts ModelInfer's input tensors.
  // `max_request_time` caps every request's deadline (CappedDeadline). `shared_memory`
  // (borrowed, may be null: the extension off) holds the clients' shared memory regions.
  InferenceService(ModelManager* manager, std::string version,
                   WorkPool* preprocess_pool = nullptr,
                   absl::Duration max_request_time = absl::InfiniteDuration(),
                   SharedMemoryRegistry* shared_memory = nullptr);

  // From now on ServerReady answers false.
  void SetShuttingDown() { shutting_down_.store(true); }

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request_bytes,
                                       grpc::ByteBuffer* response_bytes) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ModelStreamInfer(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* context,
                                        const inference::ModelConfigRequest* request,
                                        inference::ModelConfigResponse* response) override;
  grpc::ServerUnaryReactor* ModelStatistics(grpc::CallbackServerContext* context,
                                            const inference::ModelStatisticsRequest* request,
                                            inference::ModelStatisticsResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* context,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* context, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* context, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;
  // Triton's system shared-memory extension (shared_memory.h). CUDA regions: status and
  // unregistration answer for none; registering one is UNIMPLEMENTED.
  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryStatusRequest* request,
      inference::SystemSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryRegisterRequest* request,
      inference::SystemSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryUnregisterRequest* request,
      inference::SystemSharedMemoryUnregisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryStatus(
      grpc::CallbackServerContext* context, const inference::CudaSharedMemoryStatusRequest* request,
      inference::CudaSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryRegisterRequest* request,
      inference::CudaSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryUnregisterRequest* request,
      inference::CudaSharedMemoryUnregisterResponse* response) override;

 private:
  class StreamInferReactor;

  // The model `name` at `version` ("" or "1"): NOT_FOUND / UNAVAILABLE otherwise.
  absl::StatusOr<std::shared_ptr<const ServableModel>> GetModel(const std::string& name,
                                                                const std::string& version) const;
  // Runs `fields` (a ModelInfer request) on `model`, its input from `raw_inputs` (deferred
  // raw contents, may be empty) or from the shared memory it names, its outputs placed where
  // it asks; `finish` runs exactly once.
  void RunInfer(const ServableModel& model, const inference::ModelInferRequest& fields,
                grpc::CallbackServerContext* context, std::optional<ExternalRawInputs> raw_inputs,
                inference::ModelInferResponse* response, FinishCallback finish) const;

  ModelManager* const manager_;
  const std::string version_;
  WorkPool* const preprocess_pool_;  // Not owned; may be null.
  const absl::Duration max_request_time_;
  SharedMemoryRegistry no_shared_memory_{/*enabled=*/false};  // Used when none is given.
  SharedMemoryRegistry* const shared_memory_;  // Not owned; never null.
  std::atomic<bool> shutting_down_{false};
};

}  // namespace vitserve
