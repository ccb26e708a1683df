// The one place where a domain absl::Status becomes a grpc::Status (and back, for tests).
//
// absl::StatusCode and grpc::StatusCode share their numbering (both follow google.rpc.Code), so
// the code is carried over unchanged and the message verbatim; absl payloads are dropped.
// Thread-safety: pure functions. Errors: none of their own.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace vitserve {

// OK -> grpc::Status::OK; otherwise the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The inverse: the same code and error_message() (used where gRPC results re-enter domain code).
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace vitserve
