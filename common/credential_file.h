// Reading the small files that hold TLS material and bearer tokens, for the server's and the
// client's flags alike, with errors that name the flag and the file.
//
// Thread-safety: free functions.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

namespace vitserve {

// The whole file (e.g. PEM). NOT_FOUND when it cannot be read, INVALID_ARGUMENT when it holds
// only whitespace; `what` names it in the message ("--tls-cert").
inline absl::StatusOr<std::string> ReadCredentialFile(const std::string& path,
                                                      absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(what, ": cannot read '", path, "'"));
  std::ostringstream contents;
  contents << in.rdbuf();
  std::string text = contents.str();
  if (absl::StripAsciiWhitespace(text).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", path, "' is empty"));
  }
  return text;
}

// The token on the file's first line, without surrounding whitespace.
inline absl::StatusOr<std::string> ReadTokenFile(const std::string& path,
                                                 absl::string_view what) {
  VITSERVE_ASSIGN_OR_RETURN(const std::string text, ReadCredentialFile(path, what));
  std::string token(absl::StripAsciiWhitespace(absl::string_view(text).substr(0, text.find('\n'))));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": '", path, "' has an empty first line"));
  }
  return token;
}

}  // namespace vitserve
