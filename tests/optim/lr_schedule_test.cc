// pmol::LearningRate against Hugging Face transformers' schedule lambdas (copied into
// tests/optim/torch_optim_oracle.py, min_lr_ratio as in
// get_cosine_with_min_lr_schedule_with_warmup) driven through torch's LambdaLR, at every
// step of short runs (so the warmup boundary W-1/W/W+1, the middle and the end N-1/N are
// all covered) for each kind, with and without warmup and with min_lr_ratio 0 and 0.1.
// Tolerance: 1e-15 relative (the same few double operations; they can differ only by an
// FMA contraction, <= 1 ulp = 2.2e-16). An off-by-one in the warmup or decay, a wrong
// cosine phase or a floor applied during warmup changes the rate by >= 1e-3 relative.
#include "pmol/optim/lr_schedule.h"

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/optim/oracle_util.h"

namespace pmol {
namespace {

using ::pmol::testing::RunTorchOracle;

const char* KindName(LrScheduleOptions::Kind kind) {
  switch (kind) {
    case LrScheduleOptions::kConstant: return "constant";
    case LrScheduleOptions::kLinear: return "linear";
    case LrScheduleOptions::kCosine: return "cosine";
  }
  return "?";
}

LrScheduleOptions Make(LrScheduleOptions::Kind kind, double lr, int64_t warmup, int64_t total,
                       double min_ratio) {
  LrScheduleOptions o;
  o.kind = kind;
  o.lr = lr;
  o.warmup_steps = warmup;
  o.total_steps = total;
  o.min_lr_ratio = min_ratio;
  return o;
}

TEST(LrScheduleTest, MatchesTransformersAtEveryStep) {
  std::vector<LrScheduleOptions> cases;
  for (auto kind : {LrScheduleOptions::kConstant, LrScheduleOptions::kLinear,
                    LrScheduleOptions::kCosine}) {
    for (int64_t warmup : {0, 1, 7}) {
      for (double ratio : {0.0, 0.1}) cases.push_back(Make(kind, 3e-4, warmup, 37, ratio));
    }
    cases.push_back(Make(kind, 1e-3, 10, 10, 0.0));  // warmup == total
    cases.push_back(Make(kind, 1e-3, 0, 1, 0.25));   // one step
  }
  nlohmann::json job = {{"schedules", nlohmann::json::array()}};
  for (const LrScheduleOptions& o : cases) {
    std::vector<int64_t> steps;
    for (int64_t s = 0; s <= o.total_steps; ++s) steps.push_back(s);
    job["schedules"].push_back({{"kind", KindName(o.kind)},
                                {"lr", o.lr},
                                {"warmup_steps", o.warmup_steps},
                                {"total_steps", o.total_steps},
                                {"min_lr_ratio", o.min_lr_ratio},
                                {"steps", steps}});
  }
  const nlohmann::json ref = RunTorchOracle(job, "schedules");
  ASSERT_FALSE(ref.is_null());
  for (size_t k = 0; k < cases.size(); ++k) {
    const LrScheduleOptions& o = cases[k];
    const std::vector<double> want = ref["schedules"][k].get<std::vector<double>>();
    ASSERT_EQ(static_cast<int64_t>(want.size()), o.total_steps + 1);
    for (int64_t s = 0; s <= o.total_steps; ++s) {
      const double got = LearningRate(o, s);
      EXPECT_LE(std::fabs(got - want[s]), 1e-15 * o.lr)
          << KindName(o.kind) << " warmup " << o.warmup_steps << " total " << o.total_steps
          << " min_lr_ratio " << o.min_lr_ratio << " step " << s << ": got " << got
          << ", want " << want[s];
    }
  }
}

TEST(LrScheduleTest, LandmarksByHand) {
  const double lr = 1e-3;
  // Warmup: 0 at step 0, lr * s / W, full rate at W.
  const LrScheduleOptions lin = Make(LrScheduleOptions::kLinear, lr, 4, 12, 0.0);
  EXPECT_EQ(LearningRate(lin, 0), 0.0);
  EXPECT_DOUBLE_EQ(LearningRate(lin, 1), lr / 4);
  EXPECT_DOUBLE_EQ(LearningRate(lin, 3), lr * 3 / 4);
  EXPECT_DOUBLE_EQ(LearningRate(lin, 4), lr);
  EXPECT_DOUBLE_EQ(LearningRate(lin, 8), lr / 2);
  EXPECT_EQ(LearningRate(lin, 12), 0.0);
  EXPECT_EQ(LearningRate(lin, 20), 0.0);
  const LrScheduleOptions cos = Make(LrScheduleOptions::kCosine, lr, 4, 12, 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(cos, 2), lr / 2);  // the floor does not touch warmup
  EXPECT_DOUBLE_EQ(LearningRate(cos, 4), lr);
  EXPECT_DOUBLE_EQ(LearningRate(cos, 8), lr * (0.1 + 0.9 * 0.5));
  EXPECT_DOUBLE_EQ(LearningRate(cos, 12), lr * 0.1);
  // Past the end the cosine stays at its floor (transformers' formula would rise again).
  EXPECT_DOUBLE_EQ(LearningRate(cos, 16), lr * 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(Make(LrScheduleOptions::kLinear, lr, 4, 12, 0.1), 30),
                   lr * 0.1);
  const LrScheduleOptions constant = Make(LrScheduleOptions::kConstant, lr, 3, 12, 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(constant, 1), lr / 3);
  EXPECT_EQ(LearningRate(constant, 3), lr);
  EXPECT_EQ(LearningRate(constant, 100), lr);
}

TEST(LrScheduleTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateLrScheduleOptions(LrScheduleOptions{}).ok());
  struct Bad {
    LrScheduleOptions o;
    const char* field;
  };
  const Bad bad[] = {{Make(LrScheduleOptions::kLinear, -1, 0, 10, 0), "lr"},
                     {Make(LrScheduleOptions::kLinear, 1, -1, 10, 0), "warmup_steps"},
                     {Make(LrScheduleOptions::kLinear, 1, 0, -5, 0), "total_steps"},
                     {Make(LrScheduleOptions::kLinear, 1, 0, 10, 1.5), "min_lr_ratio"},
                     {Make(LrScheduleOptions::kLinear, 1, 0, 10, std::nan("")), "min_lr_ratio"}};
  for (const Bad& b : bad) {
    const absl::Status s = ValidateLrScheduleOptions(b.o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.field;
    EXPECT_NE(std::string(s.message()).find(b.field), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace pmol
