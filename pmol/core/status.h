// Status helpers for boundary errors (files, configs, data, flags): early-return
// macros for absl::Status / absl::StatusOr, which this Abseil release lacks.
#ifndef PMOL_CORE_STATUS_H_
#define PMOL_CORE_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/check.h"

#define PMOL_STATUS_CONCAT_INNER(a, b) a##b
#define PMOL_STATUS_CONCAT(a, b) PMOL_STATUS_CONCAT_INNER(a, b)

#define PMOL_RETURN_IF_ERROR(expr)            \
  do {                                        \
    ::absl::Status pmol_status_ = (expr);     \
    if (!pmol_status_.ok()) return pmol_status_; \
  } while (0)

#define PMOL_ASSIGN_OR_RETURN(lhs, expr) \
  PMOL_ASSIGN_OR_RETURN_IMPL(PMOL_STATUS_CONCAT(pmol_statusor_, __LINE__), lhs, expr)

#define PMOL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#endif  // PMOL_CORE_STATUS_H_
