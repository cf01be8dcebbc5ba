// Learning-rate schedules; see lr_schedule.h for the formulas.
#include "pmol/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace pmol {

absl::Status ValidateLrScheduleOptions(const LrScheduleOptions& o) {
  if (!(std::isfinite(o.lr) && o.lr >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer: lr = ", o.lr, " is invalid: it must be finite and >= 0"));
  }
  if (o.warmup_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer: warmup_steps = ", o.warmup_steps, " is invalid: it must be >= 0"));
  }
  if (o.total_steps < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer: total_steps = ", o.total_steps, " is invalid: it must be >= 0"));
  }
  if (!(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer: min_lr_ratio = ", o.min_lr_ratio, " is invalid: it must be in [0, 1]"));
  }
  if (o.kind != LrScheduleOptions::kConstant && o.kind != LrScheduleOptions::kLinear &&
      o.kind != LrScheduleOptions::kCosine) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer: unknown schedule kind ", static_cast<int>(o.kind)));
  }
  return absl::OkStatus();
}

double LearningRate(const LrScheduleOptions& o, int64_t step) {
  PMOL_CHECK(step >= 0);
  if (step < o.warmup_steps) {
    return o.lr * (static_cast<double>(step) /
                   static_cast<double>(std::max<int64_t>(1, o.warmup_steps)));
  }
  const double decay_steps =
      static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps));
  double f = 1.0;
  switch (o.kind) {
    case LrScheduleOptions::kConstant:
      return o.lr;
    case LrScheduleOptions::kLinear:
      f = std::max(0.0, static_cast<double>(o.total_steps - step) / decay_steps);
      break;
    case LrScheduleOptions::kCosine: {
      const double progress =
          std::min(1.0, static_cast<double>(step - o.warmup_steps) / decay_steps);
      f = std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
      break;
    }
  }
  const double factor = o.min_lr_ratio + (1.0 - o.min_lr_ratio) * f;
  return o.lr * factor;
}

}  // namespace pmol
