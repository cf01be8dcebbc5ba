// Internal-invariant checks: a broken invariant is a bug, so it aborts loudly with
// the file, line and condition. Errors caused by users (files, flags, configs) are
// absl::Status values instead, never these.
#ifndef PMOL_KERNELS_CHECK_H_
#define PMOL_KERNELS_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define PMOL_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "pmol: internal check failed at %s:%d: %s\n", __FILE__, \
                   __LINE__, #cond);                                                \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

#endif  // PMOL_KERNELS_CHECK_H_
