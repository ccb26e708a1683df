// Status propagation macros. Debian's abseil (20220623) predates ABSL_RETURN_IF_ERROR and
// ABSL_ASSIGN_OR_RETURN, so the project keeps its own two here, and only these two.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns `expr`'s status from the enclosing function when it is not OK.
#define VITSERVE_RETURN_IF_ERROR(expr)                      \
  do {                                                      \
    ::absl::Status vitserve_status_ = (expr);               \
    if (!vitserve_status_.ok()) return vitserve_status_;    \
  } while (false)

#define VITSERVE_STATUS_CONCAT_INNER_(a, b) a##b
#define VITSERVE_STATUS_CONCAT_(a, b) VITSERVE_STATUS_CONCAT_INNER_(a, b)

// `lhs = value of expr`, or returns its status from the enclosing function when not OK.
// Usage: VITSERVE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
#define VITSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  VITSERVE_ASSIGN_OR_RETURN_IMPL_(VITSERVE_STATUS_CONCAT_(vitserve_statusor_, __LINE__), lhs, expr)

#define VITSERVE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()
