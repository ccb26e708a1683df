// The reactor of a raw unary method (gRPC hands over the request's bytes rather than a parsed
// message): used where the bulk of a request is read straight from gRPC's buffer
// (deferred_classify.h for Classify, deferred_infer.h for ModelInfer). The call owns its request
// and response messages and holds the model's handle until OnDone (a gRPC thread), after which
// it deletes itself.
//
// `Deferred` is the reader's result, with the request's other fields in `Deferred::request`.
// Thread-safety: as any reactor; Answer once.
#pragma once

#include <memory>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/api/grpc_status.h"
#include "server/api/wire_bytes.h"
#include "server/model_manager.h"

namespace vitserve {

template <typename Request, typename Response, typename Deferred>
class RawUnaryCall final : public grpc::ServerUnaryReactor {
 public:
  explicit RawUnaryCall(grpc::ByteBuffer* reply) : reply_(reply) {}
  void OnDone() override { delete this; }

  // Finishes the call with `status`; when it is OK, with `response` serialised as the reply.
  void Answer(const absl::Status& status) {
    if (!status.ok()) return Finish(ToGrpcStatus(status));
    absl::StatusOr<grpc::ByteBuffer> reply = SerializedMessage(response);
    if (!reply.ok()) return Finish(ToGrpcStatus(reply.status()));
    *reply_ = *std::move(reply);
    Finish(grpc::Status::OK);
  }

  // Parses the whole request into `request`, as the generated method would have (for requests
  // the deferred reader declines); INVALID_ARGUMENT when protobuf cannot.
  absl::Status ParseWhole(const grpc::ByteBuffer& bytes) {
    deferred.reset();
    return ParseWholeMessage(bytes, &request);
  }

  // The request's fields: from `deferred` when its bulk was left in gRPC's buffer.
  const Request& fields() const { return deferred.has_value() ? deferred->request : request; }

  std::shared_ptr<const ServableModel> model;
  std::optional<Deferred> deferred;
  Request request;  // Unused while `deferred` is set.
  Response response;

 private:
  grpc::ByteBuffer* const reply_;  // gRPC's, valid until OnDone.
};

}  // namespace vitserve
