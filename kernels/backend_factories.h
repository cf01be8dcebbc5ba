// Where GetBackend (backend.h) finds the backends a build may or may not link: kernels/cuda
// registers its factory during static initialisation when it is linked in (a
// `--config=cuda` build, or the CPU emulation of the CUDA backend in tests/cuda), so the
// registry needs no build flag of its own.
#ifndef PMOL_KERNELS_BACKEND_FACTORIES_H_
#define PMOL_KERNELS_BACKEND_FACTORIES_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace pmol {

using BackendFactory = absl::StatusOr<std::unique_ptr<Backend>> (*)();

// Records the CUDA backend's factory; returns true, for use as a static initialiser.
bool RegisterCudaBackendFactory(BackendFactory factory);

// The registered factory, or null when no CUDA backend is linked into this binary.
BackendFactory CudaBackendFactory();

}  // namespace pmol

#endif  // PMOL_KERNELS_BACKEND_FACTORIES_H_
