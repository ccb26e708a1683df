// The KServe v2 (Open Inference Protocol) answers that do not run a model: server and model
// metadata, readiness, Triton's model configuration, statistics and repository index, filled
// as protobuf messages so that the gRPC service (inference_service.h) and the HTTP/REST server
// (server/rest/) give the same answers.
//
// Every model has exactly one version, kModelVersion ("1"; an empty version means it too). The
// tensors a model takes and gives are kserve_tensor.h's: input "input" [-1,3,S,S], output
// "logits" [-1,num_classes].
//
// Thread-safety: free functions; the ModelManager is thread-safe.
// Errors: GetVersionedModel and FillModelStatistics: INVALID_ARGUMENT (no name), NOT_FOUND
// (unknown model or version), UNAVAILABLE (not ready).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/grpc_service.pb.h"
#include "server/model_manager.h"

namespace vitserve {

// Listed in ServerMetadata: the Triton extensions vitserve implements.
inline constexpr const char* kKServeExtensions[] = {"model_configuration", "statistics",
                                                    "model_repository"};
// Listed besides them by the gRPC service when clients may use shared memory (shared_memory.h).
inline constexpr char kKServeSystemSharedMemory[] = "system_shared_memory";
inline constexpr char kKServePlatform[] = "vitserve_libtorch";
inline constexpr char kKServeBackend[] = "vitserve";

// The model `name` at `version` ("" or kModelVersion).
absl::StatusOr<std::shared_ptr<const ServableModel>> GetVersionedModel(const ModelManager& manager,
                                                                       const std::string& name,
                                                                       const std::string& version);

// Whether `name` (at `version`) is loaded and ready; false for an unknown model.
bool IsModelReady(const ModelManager& manager, const std::string& name,
                  const std::string& version);

void FillServerMetadata(const std::string& server_version,
                        inference::ServerMetadataResponse* response);
void FillModelMetadata(const ServableModel& model, inference::ModelMetadataResponse* response);
void FillModelConfig(const ServableModel& model, inference::ModelConfigResponse* response);

// One model's statistics (`name` given) or every ready model's (`name` empty).
absl::Status FillStatisticsResponse(const ModelManager& manager, const std::string& name,
                                    const std::string& version,
                                    inference::ModelStatisticsResponse* response);

// Every model of the repository with its state (READY, LOADING, UNAVAILABLE) and reason; only
// the ready ones with `ready_only`.
void FillRepositoryIndex(const ModelManager& manager, bool ready_only,
                         inference::RepositoryIndexResponse* response);

}  // namespace vitserve
