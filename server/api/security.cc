#include "server/api/security.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/credential_file.h"
#include "common/status_macros.h"
#include "grpcpp/security/server_credentials.h"

namespace vitserve {

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char difference = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) {
    difference |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  }
  return difference == 0;
}

BearerTokenChecker::BearerTokenChecker(std::string token, bool exempt_health)
    : expected_(absl::StrCat("Bearer ", token)), exempt_health_(exempt_health) {}

grpc::Status BearerTokenChecker::Process(const InputMetadata& auth_metadata,
                                         grpc::AuthContext* /*context*/,
                                         OutputMetadata* consumed_auth_metadata,
                                         OutputMetadata* /*response_metadata*/) {
  if (exempt_health_) {
    const auto path = auth_metadata.find(":path");
    if (path != auth_metadata.end() &&
        absl::StartsWith(absl::string_view(path->second.data(), path->second.size()),
                         "/grpc.health.v1.Health/")) {
      return grpc::Status::OK;
    }
  }
  const auto authorization = auth_metadata.find("authorization");
  if (authorization == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this server needs a bearer token: send 'authorization: Bearer <token>' "
                        "(vitserve-client --token-file FILE)");
  }
  const absl::string_view given(authorization->second.data(), authorization->second.size());
  if (!ConstantTimeEquals(given, expected_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  consumed_auth_metadata->insert(std::make_pair(std::string(authorization->first.data(),
                                                            authorization->first.size()),
                                                std::string(given)));
  return grpc::Status::OK;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const SecurityOptions& options) {
  const bool tls = !options.cert_file.empty() || !options.key_file.empty();
  if (!tls) {
    if (!options.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS with client "
          "certificates)");
    }
    if (!options.token_file.empty()) {
      return absl::InvalidArgumentError(
          "--auth-token-file needs --tls-cert and --tls-key: a bearer token sent in plaintext "
          "can be read off the network by anyone on the path");
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls-cert and --tls-key");
  }
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  VITSERVE_ASSIGN_OR_RETURN(pair.cert_chain, ReadCredentialFile(options.cert_file, "--tls-cert"));
  VITSERVE_ASSIGN_OR_RETURN(pair.private_key, ReadCredentialFile(options.key_file, "--tls-key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.client_ca_file.empty()) {
    VITSERVE_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                              ReadCredentialFile(options.client_ca_file, "--tls-client-ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(ssl);
  if (!options.token_file.empty()) {
    VITSERVE_ASSIGN_OR_RETURN(std::string token,
                              ReadTokenFile(options.token_file, "--auth-token-file"));
    credentials->SetAuthMetadataProcessor(
        std::make_shared<BearerTokenChecker>(std::move(token), options.token_exempt_health));
  }
  return credentials;
}

}  // namespace vitserve
