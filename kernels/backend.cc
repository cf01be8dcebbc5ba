// GetBackend: one backend object per device for the life of the process. The CUDA
// backend exists only in builds that link it (--config=cuda; it registers itself,
// backend_factories.h); asking for it elsewhere, or on a machine without a usable GPU, is
// a clear error rather than a crash.
#include "kernels/backend.h"

#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend_factories.h"
#include "kernels/cpu/cpu_backend.h"

namespace pmol {

absl::StatusOr<DeviceType> ParseDevice(const std::string& name) {
  if (name == "cpu") return DeviceType::kCpu;
  if (name == "cuda" || name == "gpu") return DeviceType::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device '", name, "' (expected cpu or cuda)"));
}

absl::StatusOr<Backend*> GetBackend(DeviceType device, int threads) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (device == DeviceType::kCpu) {
    static std::unique_ptr<CpuBackend> cpu;
    if (cpu == nullptr) cpu = std::make_unique<CpuBackend>(threads);
    if (threads > 0) cpu->SetThreads(threads);
    return cpu.get();
  }
  const BackendFactory create_cuda = CudaBackendFactory();
  if (create_cuda == nullptr) {
    return absl::FailedPreconditionError(
        "device 'cuda' requested, but this pmol was built without CUDA support; rebuild with "
        "`bazel build --config=cuda //launch:pmol`");
  }
  static std::unique_ptr<Backend> cuda;
  if (cuda == nullptr) {
    absl::StatusOr<std::unique_ptr<Backend>> created = create_cuda();
    if (!created.ok()) return created.status();
    cuda = std::move(created).value();
  }
  return cuda.get();
}

}  // namespace pmol
