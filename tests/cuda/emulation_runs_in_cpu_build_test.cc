// In a `--config=cuda` build the SIMT-emulation tests are not built (the real CUDA backend
// is linked there, and the emulated one would collide with it): they run in the CPU build.
#include "gtest/gtest.h"

TEST(SimtEmulation, RunsInTheCpuBuild) {
  GTEST_SKIP() << "the SIMT-emulation tests run in the CPU build (`bazel test //tests/cuda/...`)";
}
