// VisionClient: a thin C++ client of a vitserve server. It speaks both of the server's APIs
// over one channel: the task API `vitserve.v1.Vision` (Classify, Detect, Segment, model
// catalogue) and the KServe v2 `inference.GRPCInferenceService` (liveness, readiness, raw
// tensor inference).
//
// Errors: every RPC failure comes back as an absl::Status with the gRPC code and the server's
// message unchanged (client/grpc_status.h); UNAVAILABLE when the server cannot be reached,
// DEADLINE_EXCEEDED after ClientOptions::timeout.
// Thread-safety: all methods are thread-safe; one client may serve many threads and many
// concurrent asynchronous calls.
// Images are never decoded here: encoded files travel as bytes and the server decodes them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "vitserve/v1/vision.grpc.pb.h"

namespace vitserve::client {

struct ClientOptions {
  // Deadline of each call, counted from its start.
  absl::Duration timeout = absl::Seconds(30);
  // Largest message sent or received (a batch of large images or segmentation masks).
  int max_message_bytes = 64 * 1024 * 1024;
  // TLS: the PEM CA certificates that signed the server's certificate (empty: plaintext). For
  // mutual TLS also this client's PEM certificate and key.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // A file whose first line is the bearer token sent with every call (needs TLS).
  std::string token_file;
};

class VisionClient {
 public:
  // Called once when an asynchronous call finishes, on a gRPC thread: it must not block.
  using DoneCallback = std::function<void(absl::Status)>;

  // Creates a channel to `target` ("host:port", "dns:///host:port", "unix:/path"), plaintext or,
  // with options.tls_ca_file, TLS (INVALID_ARGUMENT / NOT_FOUND for unusable TLS or token
  // options, saying which).
  // Connecting is lazy: an unreachable server shows up as UNAVAILABLE on the first call.
  // INVALID_ARGUMENT for an empty target or nonsensical options.
  static absl::StatusOr<std::unique_ptr<VisionClient>> Connect(std::string target,
                                                               ClientOptions options = {});
  // Wraps an existing channel (tests, custom credentials).
  static std::unique_ptr<VisionClient> FromChannel(std::shared_ptr<grpc::Channel> channel,
                                                   ClientOptions options = {});

  VisionClient(const VisionClient&) = delete;
  VisionClient& operator=(const VisionClient&) = delete;

  const std::string& target() const { return target_; }
  const ClientOptions& options() const { return options_; }

  // --- vitserve.v1.Vision -----------------------------------------------------------
  absl::StatusOr<v1::ClassifyResponse> Classify(const v1::ClassifyRequest& request);
  absl::StatusOr<v1::DetectResponse> Detect(const v1::DetectRequest& request);
  absl::StatusOr<v1::SegmentResponse> Segment(const v1::SegmentRequest& request);
  absl::StatusOr<v1::ListModelsResponse> ListModels();
  absl::StatusOr<v1::ModelDescription> GetModel(const std::string& name);

  // --- inference.GRPCInferenceService (KServe v2) ----------------------------------
  absl::StatusOr<bool> ServerLive();
  absl::StatusOr<bool> ServerReady();
  absl::StatusOr<bool> ModelReady(const std::string& name);
  absl::StatusOr<inference::ModelMetadataResponse> ModelMetadata(const std::string& name);

  // --- grpc.health.v1.Health ----------------------------------------------------------
  // The standard health status of `service` ("" = the whole server): SERVING, NOT_SERVING,
  // ...; NOT_FOUND for a service the server does not know, UNIMPLEMENTED for a server without
  // the health protocol.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> HealthCheck(
      const std::string& service);
  absl::StatusOr<inference::ModelInferResponse> ModelInfer(
      const inference::ModelInferRequest& request);
  // Triton's system shared-memory extension (the server needs --allow-client-shm).
  absl::Status RegisterSystemSharedMemory(const std::string& name, const std::string& key,
                                          uint64_t byte_size);
  absl::Status UnregisterSystemSharedMemory(const std::string& name);

  // --- Asynchronous calls (gRPC callback API), for load generation ----------------
  // A request serialised once, for calls that all send it: each call then references the same
  // bytes instead of serialising the message again (a raw 224x224 image is 150 KB, and
  // serialising it was a copy per call on the load generator's cores).
  struct SerializedRequest {
    std::string method;      // The full method name: "/vitserve.v1.Vision/Classify".
    grpc::ByteBuffer bytes;  // The serialised request.
  };
  // `service` is the service's full name (v1::Vision::service_full_name()), `method` its
  // method's ("Classify").
  static SerializedRequest Serialize(const std::string& service, const std::string& method,
                                     const google::protobuf::MessageLite& request);
  // Starts one call sending `request`'s bytes and returns at once; `done` receives its status.
  // The reply is discarded unparsed. `request` and this client must stay alive until `done`
  // has run (the call's own resources are freed before `done` runs, so `done` may trigger the
  // client's destruction); many calls may share one request.
  void StartSerialized(const SerializedRequest& request, DoneCallback done);

 private:
  VisionClient(std::string target, std::shared_ptr<grpc::Channel> channel,
               ClientOptions options);

  // Sets the call's deadline from options_.timeout.
  void Prepare(grpc::ClientContext& context) const;

  template <typename Response, typename Stub, typename Request>
  absl::StatusOr<Response> Unary(
      Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
      const Request& request) const;

  std::string target_;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Vision::Stub> vision_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<grpc::GenericStub> generic_;  // For StartSerialized.
};

}  // namespace vitserve::client
