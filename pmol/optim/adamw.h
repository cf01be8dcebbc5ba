// AdamW over a set of named parameters, as torch.optim.AdamW (decoupled weight decay,
// bias correction, no amsgrad). With step t = 1, 2, ... and the step's learning rate lr:
//   p <- p - lr*wd*p
//   m <- beta1 m + (1 - beta1) g,           v <- beta2 v + (1 - beta2) g^2
//   m_hat = m / (1 - beta1^t),              v_hat = v / (1 - beta2^t)
//   p <- p - lr * m_hat / (sqrt(v_hat) + eps)
// computed by Backend::AdamWStep in torch's order of operations.
//
// State: m ("exp_avg") and v ("exp_avg_sq") per parameter, zero-initialised on the
// parameter's backend, in f32 for f32/bf16/f16 parameters and f64 for f64 parameters.
// A bf16/f16 parameter also gets an f32 master copy ("master"), taken from the parameter
// when it is registered: the update is applied to the master, which is then rounded into
// the parameter (so small updates are not lost to bf16 rounding). A gradient may be of
// the parameter's dtype or of the state's dtype.
// Parameters registered with decay = false (routers by default) get weight decay 0.
//
// Checkpoints: NamedState() lists "<name>.exp_avg", "<name>.exp_avg_sq" (and
// "<name>.master" for bf16/f16 parameters) for every parameter in registration order,
// then "step" (an F64 scalar, shape [], on the CPU). LoadState() takes the same list,
// checks every name, shape and the step before changing anything, and converts dtypes.
// Deterministic: the update of each element depends only on that element.
#ifndef PMOL_OPTIM_ADAMW_H_
#define PMOL_OPTIM_ADAMW_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "pmol/core/tensor.h"

namespace pmol {

// Mirrors the AdamW fields of OptimizerConfig (proto/run_config.proto).
struct AdamWOptions {
  double lr = 2e-4;  // peak learning rate; Step() takes the scheduled rate of each step
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// lr >= 0, 0 <= beta < 1, eps > 0, weight_decay >= 0, all finite; messages name the field.
absl::Status ValidateAdamWOptions(const AdamWOptions& options);

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class AdamW {
 public:
  static constexpr const char* kStepName = "step";

  // `options` must be valid (ValidateAdamWOptions); checked loudly.
  explicit AdamW(const AdamWOptions& options);

  // Registers a trainable tensor and its gradient buffer (same shape and backend; the
  // gradient is read at every Step). Names must be unique and non-empty. Errors name
  // the parameter.
  absl::Status AddParam(const std::string& name, Tensor param, Tensor grad, bool decay = true);

  // One update of every parameter with learning rate `lr`; increments step().
  void Step(double lr);

  // Updates taken so far (0 before the first Step).
  int64_t step() const { return step_; }
  const AdamWOptions& options() const { return options_; }
  int64_t num_params() const { return static_cast<int64_t>(slots_.size()); }

  // The state for checkpoints (see the file comment). The tensors are the live state
  // (no copy), except the step scalar.
  NamedTensors NamedState() const;
  // Restores the state saved by NamedState() of an optimizer with the same parameters.
  // On error nothing changes.
  absl::Status LoadState(const NamedTensors& state);

 private:
  struct Slot {
    std::string name;
    Tensor param;
    Tensor grad;
    bool decay = true;
    Tensor master;      // f32 copy of a bf16/f16 parameter; undefined otherwise
    Tensor exp_avg;     // m
    Tensor exp_avg_sq;  // v
    Tensor grad_state;  // scratch: the gradient converted to the state dtype, if needed
  };

  AdamWOptions options_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

}  // namespace pmol

#endif  // PMOL_OPTIM_ADAMW_H_
