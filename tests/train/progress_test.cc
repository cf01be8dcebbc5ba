// The progress line of `pmol train` (pmol/train/progress.h), character for character:
// its fields and their order are what log files and scripts read, so a change in format
// must show here. Also the duration and byte formats it uses.
#include "pmol/train/progress.h"

#include <string>

#include "gtest/gtest.h"

namespace pmol {
namespace {

ProgressFigures Example() {
  ProgressFigures f;
  f.step = 120;
  f.total_steps = 600;
  f.epoch = 0.4;
  f.metrics = {{"loss/total", 0.6421},      {"loss/dpo", 0.6389},
               {"loss/group", 0.0251},      {"loss/balance", 1.005},
               {"loss/reward", 0.0},        {"rewards/accuracy", 0.62},
               {"rewards/margins", 0.153}};
  f.lr = 1.9e-4;
  f.grad_norm = 0.84;
  f.tokens_per_second = 2310.4;
  f.elapsed_seconds = 62;
  f.eta_seconds = 248;
  return f;
}

TEST(ProgressTest, LineWithPeakMemory) {
  ProgressFigures f = Example();
  f.peak_memory_bytes = 1.23 * (1 << 30);
  EXPECT_EQ(ProgressLine(f),
            "step 120/600 (20%) | epoch 0.40 | loss 0.6421 dpo 0.6389 group 0.0251 bal 1.0050 | "
            "acc 0.62 margin 0.153 | lr 1.9e-04 | gnorm 0.84 | 2310 tok/s | mem 1.23 GiB | "
            "elapsed 1m02s | ETA 4m08s");
}

TEST(ProgressTest, LineWithoutPeakMemory) {
  EXPECT_EQ(ProgressLine(Example()),
            "step 120/600 (20%) | epoch 0.40 | loss 0.6421 dpo 0.6389 group 0.0251 bal 1.0050 | "
            "acc 0.62 margin 0.153 | lr 1.9e-04 | gnorm 0.84 | 2310 tok/s | "
            "elapsed 1m02s | ETA 4m08s");
}

TEST(ProgressTest, FormatBytes) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(3.5 * (1 << 20)), "3.50 MiB");
  EXPECT_EQ(FormatBytes((1 << 30) - 1.0), "1024.00 MiB");
  EXPECT_EQ(FormatBytes(1 << 30), "1.00 GiB");
  EXPECT_EQ(FormatBytes(80.0 * (1 << 30)), "80.00 GiB");
  EXPECT_EQ(FormatBytes(-1), "?");
}

TEST(ProgressTest, FormatDuration) {
  EXPECT_EQ(FormatDuration(12.4), "12s");
  EXPECT_EQ(FormatDuration(248), "4m08s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
  EXPECT_EQ(FormatDuration(-1), "?");
}

}  // namespace
}  // namespace pmol
