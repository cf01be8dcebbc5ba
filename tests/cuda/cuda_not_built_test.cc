// Built instead of cuda_backend_test.cc when pmol is built without --config=cuda: asking
// for the CUDA backend must be a clear FailedPrecondition that says how to get one,
// never a crash.
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace pmol {
namespace {

TEST(CudaNotBuilt, GetBackendExplainsTheMissingSupport) {
  absl::StatusOr<Backend*> gpu = GetBackend(DeviceType::kCuda);
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(gpu.status().message());
  EXPECT_NE(message.find("built without CUDA support"), std::string::npos) << message;
  EXPECT_NE(message.find("--config=cuda"), std::string::npos) << message;
}

TEST(CudaNotBuilt, CpuBackendStillWorks) {
  absl::StatusOr<Backend*> cpu = GetBackend(DeviceType::kCpu);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ((*cpu)->device(), DeviceType::kCpu);
}

}  // namespace
}  // namespace pmol
