// LocalRankVisibleDevices: each local rank's CUDA_VISIBLE_DEVICES (dist/local_device.h).
#include "dist/local_device.h"

#include "gtest/gtest.h"

namespace pmol::dist {
namespace {

TEST(LocalDeviceTest, UnsetOrEmptyPicksTheLocalRanksGpu) {
  EXPECT_EQ(LocalRankVisibleDevices(nullptr, 3, 8).value(), "3");
  EXPECT_EQ(LocalRankVisibleDevices("", 0, 1).value(), "0");
  EXPECT_EQ(LocalRankVisibleDevices("  ", 1, 2).value(), "1");
}

TEST(LocalDeviceTest, OneEntryIsKeptAsTheLauncherBoundIt) {
  EXPECT_EQ(LocalRankVisibleDevices("5", 0, 8).value(), "5");
  EXPECT_EQ(LocalRankVisibleDevices("GPU-8f2e", 3, 4).value(), "GPU-8f2e");
}

TEST(LocalDeviceTest, SeveralEntriesGiveTheLocalRanksEntry) {
  EXPECT_EQ(LocalRankVisibleDevices("4,5,6,7", 2, 4).value(), "6");
  EXPECT_EQ(LocalRankVisibleDevices("4, 5,6 ,7", 1, 2).value(), "5");  // more GPUs than ranks
}

TEST(LocalDeviceTest, FewerGpusThanRanksOrBadListsAreErrors) {
  absl::StatusOr<std::string> few = LocalRankVisibleDevices("0,1", 2, 4);
  ASSERT_FALSE(few.ok());
  EXPECT_NE(few.status().message().find("lists 2 GPUs, but 4 ranks run on this node"), std::string::npos)
      << few.status();
  absl::StatusOr<std::string> empty = LocalRankVisibleDevices("0,,1", 0, 2);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("empty entry"), std::string::npos) << empty.status();
}

}  // namespace
}  // namespace pmol::dist
