#include "client/grpc_status.h"

#include "absl/strings/str_cat.h"

namespace vitserve::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  // Codes outside the canonical range (a misbehaving peer) become UNKNOWN, as gRPC itself does.
  const absl::StatusCode absl_code = (code > 0 && code <= 16)
                                         ? static_cast<absl::StatusCode>(code)
                                         : absl::StatusCode::kUnknown;
  return absl::Status(absl_code, status.error_message());
}

std::string StatusCodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

std::string FormatStatus(const absl::Status& status) {
  if (status.ok()) return "OK";
  return absl::StrCat(StatusCodeName(status.code()), ": ", status.message());
}

}  // namespace vitserve::client
