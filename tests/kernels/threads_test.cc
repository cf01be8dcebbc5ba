// The CPU backend's thread count can be changed between calls (GetBackend(kCpu, n) with
// n > 0 resizes the process-wide kernel pool): every result must stay bitwise equal to
// the 1-thread result of the same deterministic op (SumRows), whatever sequence of
// resizes came before, and nothing may crash or hang. The oracle is the 1-thread run;
// there is no tolerance because SumRows promises a thread-independent order.
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

TEST(ThreadsTest, ResizingBetweenCallsKeepsResults) {
  // rows * cols > 3 * 2^15: every call with 2 or 3 threads really uses the pool.
  const int64_t rows = 331, cols = 301;
  std::mt19937 rng(91);
  const std::vector<float> dy = Cast<float>(Uniform(rng, rows * cols));
  auto sum_rows = [&](int threads) {
    std::vector<float> db(cols, 0.0f);
    Backend* be = Cpu(threads);
    // Let workers started by a resize reach their wait loop before the next job, so a
    // worker that wakes up for a job that is not there would show here every time.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    be->SumRows(DType::kF32, dy.data(), rows, cols, db.data());
    return db;
  };
  const std::vector<float> want = sum_rows(1);
  // Grow, shrink and grow again after the pool has run jobs at each size.
  for (int threads : {2, 2, 1, 2, 3, 3, 2, 1, 3, 2, 3}) {
    ExpectBitwiseEqual(sum_rows(threads), want, "threads=" + std::to_string(threads));
  }
}

}  // namespace
}  // namespace pmol::testing
