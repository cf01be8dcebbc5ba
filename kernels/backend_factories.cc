// See backend_factories.h.
#include "kernels/backend_factories.h"

namespace pmol {
namespace {

BackendFactory& CudaSlot() {
  static BackendFactory factory = nullptr;
  return factory;
}

}  // namespace

bool RegisterCudaBackendFactory(BackendFactory factory) {
  CudaSlot() = factory;
  return true;
}

BackendFactory CudaBackendFactory() { return CudaSlot(); }

}  // namespace pmol
