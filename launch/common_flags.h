// Flags shared by several `pmol` commands (gflags is one namespace per binary): the
// output path, the seed, the device and the CPU thread count; and the helper that turns
// --device/--threads into a backend.
#ifndef PMOL_LAUNCH_COMMON_FLAGS_H_
#define PMOL_LAUNCH_COMMON_FLAGS_H_

#include "absl/status/statusor.h"
#include "gflags/gflags.h"
#include "kernels/backend.h"

DECLARE_string(out);
DECLARE_int32(seed);
DECLARE_string(device);
DECLARE_int32(threads);

namespace pmol {

// The backend named by --device (cpu|cuda) with --threads CPU threads.
absl::StatusOr<Backend*> BackendFromFlags();

}  // namespace pmol

#endif  // PMOL_LAUNCH_COMMON_FLAGS_H_
