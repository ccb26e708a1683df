#include "client/vision_client.h"

#include <chrono>
#include <utility>

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpc/grpc.h>
#include <grpcpp/support/channel_arguments.h>

#include "client/grpc_status.h"
#include "common/credential_file.h"
#include "common/status_macros.h"

namespace vitserve::client {
namespace {

// Owns what one asynchronous call needs until its completion callback has run.
template <typename Response>
struct AsyncCall {
  grpc::ClientContext context;
  Response response;
  VisionClient::DoneCallback done;
};

// Runs `rpc(context, response)` on a fresh AsyncCall and frees it when the call completes.
template <typename Response, typename Rpc>
void StartAsync(Rpc rpc, VisionClient::DoneCallback done,
                const std::function<void(grpc::ClientContext&)>& prepare) {
  auto* call = new AsyncCall<Response>();
  call->done = std::move(done);
  prepare(call->context);
  rpc(&call->context, &call->response, [call](grpc::Status status) {
    // Free the context (which holds a channel reference) before reporting completion: the
    // caller may then destroy the client, and the last channel reference must never be
    // dropped on gRPC's callback thread (gRPC 1.51 then joins that thread from itself and
    // later crashes; grpc/grpc#32584).
    VisionClient::DoneCallback done = std::move(call->done);
    delete call;
    done(FromGrpcStatus(status));
  });
}

}  // namespace

namespace {

// Plaintext, TLS or mutual TLS, with the bearer token as call credentials.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const ClientOptions& options) {
  if (options.tls_ca_file.empty()) {
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-cert/--tls-key need --tls-ca (the CA that signed the server's certificate)");
    }
    if (!options.token_file.empty()) {
      return absl::InvalidArgumentError(
          "--token-file needs --tls-ca: a token is never sent over a plaintext connection");
    }
    return grpc::InsecureChannelCredentials();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("mutual TLS needs both --tls-cert and --tls-key");
  }
  grpc::SslCredentialsOptions ssl;
  VITSERVE_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                            ReadCredentialFile(options.tls_ca_file, "--tls-ca"));
  if (!options.tls_cert_file.empty()) {
    VITSERVE_ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                              ReadCredentialFile(options.tls_cert_file, "--tls-cert"));
    VITSERVE_ASSIGN_OR_RETURN(ssl.pem_private_key,
                              ReadCredentialFile(options.tls_key_file, "--tls-key"));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::SslCredentials(ssl);
  if (!options.token_file.empty()) {
    VITSERVE_ASSIGN_OR_RETURN(std::string token,
                              ReadTokenFile(options.token_file, "--token-file"));
    // Sends "authorization: Bearer <token>" with every call.
    credentials = grpc::CompositeChannelCredentials(credentials,
                                                    grpc::AccessTokenCredentials(token));
  }
  return credentials;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VisionClient>> VisionClient::Connect(std::string target,
                                                                    ClientOptions options) {
  if (target.empty()) {
    return absl::InvalidArgumentError("empty server address; expected HOST:PORT");
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes must be positive");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  // A connection of its own: channels with equal arguments would otherwise share one through
  // gRPC's global subchannel pool (bench --channels relies on separate connections).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentials(options);
  if (!credentials.ok()) return credentials.status();
  auto channel = grpc::CreateCustomChannel(target, *credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError("cannot create a channel to '" + target + "'");
  }
  return std::unique_ptr<VisionClient>(
      new VisionClient(std::move(target), std::move(channel), options));
}

std::unique_ptr<VisionClient> VisionClient::FromChannel(std::shared_ptr<grpc::Channel> channel,
                                                        ClientOptions options) {
  return std::unique_ptr<VisionClient>(
      new VisionClient("<channel>", std::move(channel), options));
}

VisionClient::VisionClient(std::string target, std::shared_ptr<grpc::Channel> channel,
                           ClientOptions options)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      vision_(v1::Vision::NewStub(channel_)),
      kserve_(inference::GRPCInferenceService::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)),
      generic_(std::make_unique<grpc::GenericStub>(channel_)) {}

void VisionClient::Prepare(grpc::ClientContext& context) const {
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
}

// One blocking unary call through `method` of `stub`, with the client's deadline.
template <typename Response, typename Stub, typename Request>
absl::StatusOr<Response> VisionClient::Unary(
    Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    const Request& request) const {
  grpc::ClientContext context;
  Prepare(context);
  Response response;
  absl::Status status = FromGrpcStatus((stub.*method)(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ClassifyResponse> VisionClient::Classify(const v1::ClassifyRequest& request) {
  return Unary(*vision_, &v1::Vision::Stub::Classify, request);
}

absl::StatusOr<v1::DetectResponse> VisionClient::Detect(const v1::DetectRequest& request) {
  return Unary(*vision_, &v1::Vision::Stub::Detect, request);
}

absl::StatusOr<v1::SegmentResponse> VisionClient::Segment(const v1::SegmentRequest& request) {
  return Unary(*vision_, &v1::Vision::Stub::Segment, request);
}

absl::StatusOr<v1::ListModelsResponse> VisionClient::ListModels() {
  return Unary(*vision_, &v1::Vision::Stub::ListModels, v1::ListModelsRequest());
}

absl::StatusOr<v1::ModelDescription> VisionClient::GetModel(const std::string& name) {
  v1::GetModelRequest request;
  request.set_name(name);
  return Unary(*vision_, &v1::Vision::Stub::GetModel, request);
}

absl::StatusOr<bool> VisionClient::ServerLive() {
  using Stub = inference::GRPCInferenceService::Stub;
  auto response = Unary(*kserve_, &Stub::ServerLive, inference::ServerLiveRequest());
  if (!response.ok()) return response.status();
  return response->live();
}

absl::StatusOr<bool> VisionClient::ServerReady() {
  using Stub = inference::GRPCInferenceService::Stub;
  auto response = Unary(*kserve_, &Stub::ServerReady, inference::ServerReadyRequest());
  if (!response.ok()) return response.status();
  return response->ready();
}

absl::StatusOr<bool> VisionClient::ModelReady(const std::string& name) {
  using Stub = inference::GRPCInferenceService::Stub;
  inference::ModelReadyRequest request;
  request.set_name(name);
  auto response = Unary(*kserve_, &Stub::ModelReady, request);
  if (!response.ok()) return response.status();
  return response->ready();
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> VisionClient::HealthCheck(
    const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  auto response = Unary(*health_, &grpc::health::v1::Health::Stub::Check, request);
  if (!response.ok()) return response.status();
  return response->status();
}

absl::StatusOr<inference::ModelMetadataResponse> VisionClient::ModelMetadata(
    const std::string& name) {
  inference::ModelMetadataRequest request;
  request.set_name(name);
  return Unary(*kserve_, &inference::GRPCInferenceService::Stub::ModelMetadata, request);
}

absl::StatusOr<inference::ModelInferResponse> VisionClient::ModelInfer(
    const inference::ModelInferRequest& request) {
  return Unary(*kserve_, &inference::GRPCInferenceService::Stub::ModelInfer, request);
}

absl::Status VisionClient::RegisterSystemSharedMemory(const std::string& name,
                                                      const std::string& key,
                                                      uint64_t byte_size) {
  inference::SystemSharedMemoryRegisterRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_byte_size(byte_size);
  return Unary(*kserve_, &inference::GRPCInferenceService::Stub::SystemSharedMemoryRegister,
               request)
      .status();
}

absl::Status VisionClient::UnregisterSystemSharedMemory(const std::string& name) {
  inference::SystemSharedMemoryUnregisterRequest request;
  request.set_name(name);
  return Unary(*kserve_, &inference::GRPCInferenceService::Stub::SystemSharedMemoryUnregister,
               request)
      .status();
}

VisionClient::SerializedRequest VisionClient::Serialize(
    const std::string& service, const std::string& method,
    const google::protobuf::MessageLite& request) {
  grpc::Slice bytes(request.SerializeAsString());
  return SerializedRequest{"/" + service + "/" + method, grpc::ByteBuffer(&bytes, 1)};
}

void VisionClient::StartSerialized(const SerializedRequest& request, DoneCallback done) {
  StartAsync<grpc::ByteBuffer>(
      [this, &request](grpc::ClientContext* c, grpc::ByteBuffer* r,
                       std::function<void(grpc::Status)> f) {
        generic_->UnaryCall(c, request.method, grpc::StubOptions(), &request.bytes, r,
                            std::move(f));
      },
      std::move(done), [this](grpc::ClientContext& c) { Prepare(c); });
}

}  // namespace vitserve::client
