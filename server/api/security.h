// Who may connect: the gRPC listening credentials (plaintext, TLS, or mutual TLS) and an
// optional bearer token that every call must carry.
//
// TLS: `cert_file` + `key_file` (PEM) serve TLS; with `client_ca_file` too, clients must present
// a certificate that CA signed (mutual TLS). A bearer token (`token_file`, its first line) is
// checked on every call's `authorization: Bearer <token>` metadata, in constant time; a call
// without it, or with another, fails with UNAUTHENTICATED before any handler runs. gRPC checks
// tokens only on TLS connections, and a token sent in the clear could be read off the wire, so a
// token needs TLS. The standard health service (grpc.health.v1.Health, Kubernetes' gRPC probes)
// can be left open with `token_exempt_health`.
//
// Thread-safety: the processor is called by gRPC from its threads; it is immutable.
// Errors: INVALID_ARGUMENT for an incomplete combination (a key without a certificate, a client
// CA or token without TLS), NOT_FOUND for a missing file, INVALID_ARGUMENT for an empty one.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"

namespace vitserve {

struct SecurityOptions {
  std::string cert_file;       // --tls-cert
  std::string key_file;        // --tls-key
  std::string client_ca_file;  // --tls-client-ca: mutual TLS
  std::string token_file;      // --auth-token-file
  bool token_exempt_health = true;  // --auth-exempt-health
  bool token_exempt_metrics = false;  // --auth-exempt-metrics: the REST port's /metrics
};

// Whether a == b, compared without an early exit, so the time taken says nothing of how much of
// a guessed token was right (only whether its length was).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The credentials AddListeningPort should use for these options.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityOptions& options);

// Accepts a call when its metadata has `authorization: Bearer <token>` (or, with
// `exempt_health`, when it calls grpc.health.v1.Health); UNAUTHENTICATED otherwise.
class BearerTokenChecker final : public grpc::AuthMetadataProcessor {
 public:
  BearerTokenChecker(std::string token, bool exempt_health);

  bool IsBlocking() const override { return false; }  // A string comparison: never blocks.
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::string expected_;  // "Bearer <token>"
  const bool exempt_health_;
};

}  // namespace vitserve
