// The NCCL backend in a build without CUDA: there is none; see nccl_comm.h.
#include "absl/status/status.h"
#include "dist/nccl_comm.h"

namespace pmol::dist {

bool NcclAvailable() { return false; }

void* NcclCommStream(Comm*) { return nullptr; }

absl::StatusOr<std::unique_ptr<Comm>> CreateNcclComm(std::unique_ptr<Comm>, Backend*, const NcclOptions&) {
  return absl::FailedPreconditionError(
      "NCCL: this pmol was built without CUDA support, so it has no NCCL backend; rebuild with "
      "`bazel build --config=cuda //launch:pmol`");
}

}  // namespace pmol::dist
