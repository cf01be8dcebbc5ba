// Learning-rate schedules, as Hugging Face transformers' get_constant_schedule_with_warmup,
// get_linear_schedule_with_warmup and get_cosine_schedule_with_warmup (num_cycles 0.5),
// with an optional floor. For the 0-based optimizer step s (the s-th update; the rate
// of Step() number s + 1), warmup W, total steps N and ratio r = min_lr_ratio:
//
//   LearningRate = lr * factor(s)
//   s < W:           factor = s / max(1, W)                       (0 at the first step)
//   s >= W:
//     kConstant:     factor = 1
//     kLinear:       f = max(0, (N - s) / max(1, N - W))
//     kCosine:       f = 0.5 * (1 + cos(pi * p)),  p = (s - W) / max(1, N - W)
//     then           factor = r + (1 - r) * f
//
// With r = 0 this is exactly transformers' lambda (LambdaLR multiplies the base rate by
// it); with r > 0 the decay ends at r * lr, as transformers'
// get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate = r) does for the cosine. One
// deliberate difference: for s > N the cosine's progress is clamped to 1, so the rate
// stays at its minimum instead of rising again as transformers' formula would (the
// training loop does not go past N; linear is unaffected, it already stays at 0).
#ifndef PMOL_OPTIM_LR_SCHEDULE_H_
#define PMOL_OPTIM_LR_SCHEDULE_H_

#include <cstdint>

#include "absl/status/status.h"

namespace pmol {

// Mirrors the schedule fields of OptimizerConfig (proto/run_config.proto); total_steps is
// the run's length in optimizer steps.
struct LrScheduleOptions {
  enum Kind { kConstant, kLinear, kCosine };
  Kind kind = kCosine;
  double lr = 2e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;
  double min_lr_ratio = 0.0;
};

// lr finite and >= 0, warmup_steps >= 0, total_steps >= 0, min_lr_ratio in [0, 1];
// messages name the field.
absl::Status ValidateLrScheduleOptions(const LrScheduleOptions& options);

// The learning rate of 0-based optimizer step `step` (>= 0).
double LearningRate(const LrScheduleOptions& options, int64_t step);

}  // namespace pmol

#endif  // PMOL_OPTIM_LR_SCHEDULE_H_
