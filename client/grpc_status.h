// The client's one conversion from gRPC status to absl::Status, and the error line the CLI
// prints. gRPC and absl share the canonical code numbering (0..16), so the code is kept as is
// and the server's message is carried over verbatim. Stateless and thread-safe.
#pragma once

#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace vitserve::client {

// OK for an OK status; otherwise the same canonical code with the server's message.
absl::Status FromGrpcStatus(const grpc::Status& status);

// "INVALID_ARGUMENT" for absl::StatusCode::kInvalidArgument, ... (the gRPC code names).
std::string StatusCodeName(absl::StatusCode code);

// "<CODE_NAME>: <message>", e.g. "NOT_FOUND: model 'x' is not loaded"; "OK" for OK.
std::string FormatStatus(const absl::Status& status);

}  // namespace vitserve::client
