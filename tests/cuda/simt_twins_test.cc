// What the twins of the emulated tests (tests/cuda/simt_emulation.bzl) rely on:
// - the schedules of simt_emulation/simt_emulation.h: threads reach each barrier in index
//   order (forward) or from the last to the first (reverse, with PMOL_SIMT_SCHEDULE=reverse,
//   which the _reverse_emulated_test twin sets), blocks likewise; a kernel that reads
//   another thread's shared memory without a barrier gives the wrong answer under one of
//   the two;
// - the memcheck twin (_memcheck_emulated_test) is built with AddressSanitizer, and there
//   the bytes past an emulated device allocation, and past a launch's dynamic shared
//   memory, are unaddressable.
#include <cuda_runtime.h>  // simt_emulation/cuda_runtime.h

#include <cstdlib>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace {

constexpr int kThreads = 64;

bool ReverseAsked() {
  const char* value = std::getenv("PMOL_SIMT_SCHEDULE");
  return value != nullptr && std::strcmp(value, "reverse") == 0;
}

std::vector<int> LaunchAndRecord(dim3 grid, int threads) {
  std::vector<int> order;
  std::vector<unsigned char> shared(16);
  EXPECT_TRUE(simt::Launch(grid, dim3(threads), shared.data(), shared.size(), 0, [&] {
    order.push_back(static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x));  // arrival
    __syncthreads();
  }));
  return order;
}

// Each thread i stores i + 1 in shared memory, then (with or without a barrier) reads what
// thread i - 1 stored. Returns how many of threads 1 .. n-1 read the right value.
int NeighbourReadsRight(bool with_barrier) {
  std::vector<unsigned char> shared(kThreads * sizeof(int));
  std::vector<int> got(kThreads, 0);
  EXPECT_TRUE(simt::Launch(dim3(1), dim3(kThreads), shared.data(), shared.size(), shared.size(), [&] {
    PMOL_DYNAMIC_SHARED(smem);
    int* s = reinterpret_cast<int*>(smem);
    const int i = static_cast<int>(threadIdx.x);
    s[i] = i + 1;
    if (with_barrier) __syncthreads();
    if (i > 0) got[i] = s[i - 1];
  }));
  int right = 0;
  for (int i = 1; i < kThreads; ++i) right += got[i] == i;
  return right;
}

// Under bazel, the reverse twin (its label ends in _reverse_emulated_test) must have been
// given the reverse schedule, and the forward test must not.
TEST(SimtSchedule, TheReverseTwinRunsReversed) {
  const char* target = std::getenv("TEST_TARGET");
  if (target == nullptr) GTEST_SKIP() << "not run by bazel test";
  EXPECT_EQ(ReverseAsked(), std::strstr(target, "_reverse_emulated_test") != nullptr) << target;
}

TEST(SimtSchedule, ThreadsAndBlocksRunInTheOrderTheEnvironmentAsks) {
  const std::vector<int> order = LaunchAndRecord(dim3(3), 40);
  ASSERT_EQ(order.size(), 120u);
  for (int j = 0; j < 120; ++j) {
    const int expected = ReverseAsked() ? 119 - j : j;
    ASSERT_EQ(order[j], expected) << "arrival " << j << (ReverseAsked() ? " (reverse)" : " (forward)");
  }
}

TEST(SimtSchedule, AMissingBarrierShowsUnderOneScheduleAndABarrierUnderNeither) {
  EXPECT_EQ(NeighbourReadsRight(/*with_barrier=*/true), kThreads - 1);
  // Forward: thread i - 1 has run to the end before thread i starts, so the race is
  // hidden; reverse: thread i reads before thread i - 1 has stored, i.e. the 0xff fill.
  EXPECT_EQ(NeighbourReadsRight(/*with_barrier=*/false), ReverseAsked() ? 0 : kThreads - 1);
}

TEST(SimtMemcheck, TheMemcheckTwinIsInstrumented) {
  const char* target = std::getenv("TEST_TARGET");
  if (target == nullptr) GTEST_SKIP() << "not run by bazel test";
#if defined(__SANITIZE_ADDRESS__)
  const bool instrumented = true;
#else
  const bool instrumented = false;
#endif
  EXPECT_EQ(instrumented, std::strstr(target, "_memcheck_emulated_test") != nullptr) << target;
}

#if defined(__SANITIZE_ADDRESS__)
TEST(SimtMemcheck, BytesPastAnAllocationOrTheSharedMemoryAreUnaddressable) {
  void* p = nullptr;
  ASSERT_EQ(cudaMallocFromPoolAsync(&p, 10, nullptr, nullptr), cudaSuccess);
  const char* bytes = static_cast<const char*>(p);
  EXPECT_EQ(__asan_region_is_poisoned(const_cast<char*>(bytes), 10), nullptr);
  for (int i : {10, 11, 16, 255}) EXPECT_TRUE(__asan_address_is_poisoned(bytes + i)) << i;
  ASSERT_EQ(cudaFreeAsync(p, nullptr), cudaSuccess);
  EXPECT_TRUE(__asan_address_is_poisoned(bytes)) << "freed";

  bool inside = false, past = false;
  simt::LaunchKernel({dim3(1), dim3(32), 40, nullptr}, [&] {
    PMOL_DYNAMIC_SHARED(smem);
    if (threadIdx.x == 0) {
      inside = __asan_region_is_poisoned(smem, 40) == nullptr;
      past = __asan_address_is_poisoned(smem + 40);
    }
  });
  EXPECT_TRUE(inside);
  EXPECT_TRUE(past);
}
#endif

}  // namespace
