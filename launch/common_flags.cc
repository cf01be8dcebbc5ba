// Definitions of the flags shared by several commands; see common_flags.h.
#include "launch/common_flags.h"

#include "pmol/core/status.h"

DEFINE_string(out, "", "output path (file or directory, per command)");
DEFINE_int32(seed, 0, "random seed");
DEFINE_string(device, "cpu", "compute device: cpu or cuda");
DEFINE_int32(threads, 0, "CPU threads (0: all cores)");

namespace pmol {

absl::StatusOr<Backend*> BackendFromFlags() {
  PMOL_ASSIGN_OR_RETURN(DeviceType device, ParseDevice(FLAGS_device));
  if (FLAGS_threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  return GetBackend(device, FLAGS_threads);
}

}  // namespace pmol
