// A build without CUDA has no NCCL backend: asking for it is a clear error that says how
// to get one, never a crash.
#include <memory>
#include <string>

#include "dist/local_comm.h"
#include "dist/nccl_comm.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace pmol::dist {
namespace {

TEST(NcclNotBuiltTest, CreatingOneIsAClearError) {
  EXPECT_FALSE(NcclAvailable());
  absl::StatusOr<Backend*> cpu = GetBackend(DeviceType::kCpu);
  ASSERT_TRUE(cpu.ok());
  absl::StatusOr<std::unique_ptr<Comm>> comm = CreateNcclComm(std::make_unique<LocalComm>(), *cpu, NcclOptions{});
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(comm.status().message());
  EXPECT_NE(message.find("without CUDA support"), std::string::npos) << message;
  EXPECT_NE(message.find("--config=cuda"), std::string::npos) << message;
}

}  // namespace
}  // namespace pmol::dist
