// AdamW; see adamw.h for the math and the state layout.
#include "pmol/optim/adamw.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace pmol {
namespace {

bool IsLowPrecision(DType dt) { return dt == DType::kBF16 || dt == DType::kF16; }

// The dtype of the state (and of the master copy) for a parameter dtype.
DType StateDType(DType param_dt) { return param_dt == DType::kF64 ? DType::kF64 : DType::kF32; }

absl::Status Field(bool ok, const char* field, double value, const char* want) {
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer: ", field, " = ", value, " is invalid: it must be ", want));
}

}  // namespace

absl::Status ValidateAdamWOptions(const AdamWOptions& o) {
  absl::Status s = Field(std::isfinite(o.lr) && o.lr >= 0, "lr", o.lr, "finite and >= 0");
  if (s.ok()) {
    s = Field(std::isfinite(o.beta1) && o.beta1 >= 0 && o.beta1 < 1, "beta1", o.beta1,
              "in [0, 1)");
  }
  if (s.ok()) {
    s = Field(std::isfinite(o.beta2) && o.beta2 >= 0 && o.beta2 < 1, "beta2", o.beta2,
              "in [0, 1)");
  }
  if (s.ok()) s = Field(std::isfinite(o.eps) && o.eps > 0, "eps", o.eps, "finite and > 0");
  if (s.ok()) {
    s = Field(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "weight_decay",
              o.weight_decay, "finite and >= 0");
  }
  return s;
}

AdamW::AdamW(const AdamWOptions& options) : options_(options) {
  const absl::Status valid = ValidateAdamWOptions(options);
  if (!valid.ok()) std::fprintf(stderr, "pmol: AdamW: %s\n", valid.ToString().c_str());
  PMOL_CHECK(valid.ok());
}

absl::Status AdamW::AddParam(const std::string& name, Tensor param, Tensor grad, bool decay) {
  if (name.empty()) return absl::InvalidArgumentError("AdamW: a parameter needs a name");
  for (const Slot& slot : slots_) {
    if (slot.name == name) {
      return absl::AlreadyExistsError(
          absl::StrCat("AdamW: parameter '", name, "' is registered twice"));
    }
  }
  if (!param.defined() || !grad.defined()) {
    return absl::InvalidArgumentError(absl::StrCat("AdamW: parameter '", name, "': ",
                                                   param.defined() ? "gradient" : "tensor",
                                                   " is undefined"));
  }
  if (!IsFloating(param.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat("AdamW: parameter '", name, "' has dtype ",
                                                   DTypeName(param.dtype()),
                                                   "; trainable tensors are floating-point"));
  }
  const DType state_dt = StateDType(param.dtype());
  if (grad.dtype() != param.dtype() && grad.dtype() != state_dt) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AdamW: parameter '", name, "' (", DTypeName(param.dtype()), ") has a gradient of dtype ",
        DTypeName(grad.dtype()), "; expected ", DTypeName(param.dtype()), " or ",
        DTypeName(state_dt)));
  }
  if (grad.shape() != param.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("AdamW: parameter '", name, "' has shape ",
                                                   ShapeString(param.shape()),
                                                   " but its gradient has shape ",
                                                   ShapeString(grad.shape())));
  }
  if (grad.backend() != param.backend()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AdamW: parameter '", name, "' is on ", param.backend()->Name(),
        " but its gradient is on ", grad.backend()->Name()));
  }
  Backend* backend = param.backend();
  Slot slot;
  slot.name = name;
  slot.param = param;
  slot.grad = grad;
  slot.decay = decay;
  slot.exp_avg = Tensor::Zeros(param.shape(), state_dt, backend);
  slot.exp_avg_sq = Tensor::Zeros(param.shape(), state_dt, backend);
  if (IsLowPrecision(param.dtype())) slot.master = param.ConvertTo(state_dt);
  if (grad.dtype() != state_dt) slot.grad_state = Tensor::Empty(param.shape(), state_dt, backend);
  slots_.push_back(std::move(slot));
  return absl::OkStatus();
}

void AdamW::Step(double lr) {
  ++step_;
  const double t = static_cast<double>(step_);
  AdamWScalars s;
  s.lr = lr;
  s.beta1 = options_.beta1;
  s.beta2 = options_.beta2;
  s.eps = options_.eps;
  s.bias_correction1 = 1.0 - std::pow(options_.beta1, t);
  s.bias_correction2 = 1.0 - std::pow(options_.beta2, t);
  for (Slot& slot : slots_) {
    const int64_t n = slot.param.numel();
    if (n == 0) continue;
    Backend* backend = slot.param.backend();
    const DType state_dt = slot.exp_avg.dtype();
    s.weight_decay = slot.decay ? options_.weight_decay : 0.0;
    const void* g = slot.grad.data();
    if (slot.grad_state.defined()) {
      backend->Convert(slot.grad.dtype(), slot.grad.data(), state_dt, slot.grad_state.data(), n);
      g = slot.grad_state.data();
    }
    Tensor& target = slot.master.defined() ? slot.master : slot.param;
    backend->AdamWStep(state_dt, s, target.data(), g, slot.exp_avg.data(),
                       slot.exp_avg_sq.data(), n);
    if (slot.master.defined()) {
      backend->Convert(state_dt, slot.master.data(), slot.param.dtype(), slot.param.data(), n);
    }
  }
}

NamedTensors AdamW::NamedState() const {
  NamedTensors out;
  for (const Slot& slot : slots_) {
    out.emplace_back(slot.name + ".exp_avg", slot.exp_avg);
    out.emplace_back(slot.name + ".exp_avg_sq", slot.exp_avg_sq);
    if (slot.master.defined()) out.emplace_back(slot.name + ".master", slot.master);
  }
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  const double step = static_cast<double>(step_);
  out.emplace_back(kStepName, Tensor::FromHost(&step, {}, DType::kF64, cpu));
  return out;
}

absl::Status AdamW::LoadState(const NamedTensors& state) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, tensor] : state) {
    if (!given.emplace(name, &tensor).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state: tensor '", name, "' appears twice"));
    }
  }
  // Destination of every expected name, in NamedState() order.
  std::vector<std::pair<std::string, Tensor>> targets;
  for (const Slot& slot : slots_) {
    targets.emplace_back(slot.name + ".exp_avg", slot.exp_avg);
    targets.emplace_back(slot.name + ".exp_avg_sq", slot.exp_avg_sq);
    if (slot.master.defined()) targets.emplace_back(slot.name + ".master", slot.master);
  }
  std::set<std::string> expected;
  for (const auto& [name, dst] : targets) {
    expected.insert(name);
    auto it = given.find(name);
    if (it == given.end()) {
      return absl::NotFoundError(
          absl::StrCat("optimizer state: tensor '", name, "' is missing"));
    }
    const Tensor& src = *it->second;
    if (!src.defined() || !IsFloating(src.dtype())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state: tensor '", name, "' is ",
          src.defined() ? absl::StrCat("of dtype ", DTypeName(src.dtype())) : "undefined",
          "; expected a floating-point tensor"));
    }
    if (src.shape() != dst.shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state: tensor '", name, "' has shape ", ShapeString(src.shape()),
          "; the parameter needs ", ShapeString(dst.shape())));
    }
  }
  auto step_it = given.find(kStepName);
  if (step_it == given.end()) {
    return absl::NotFoundError(
        absl::StrCat("optimizer state: tensor '", kStepName, "' is missing"));
  }
  const Tensor& step_tensor = *step_it->second;
  if (!step_tensor.defined() || !IsFloating(step_tensor.dtype()) || step_tensor.numel() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer state: tensor '", kStepName, "' must be one floating-point number"));
  }
  const double step = step_tensor.ToDoubles()[0];
  if (!(step >= 0 && step <= 0x1p53 && step == std::floor(step))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer state: tensor '", kStepName, "' = ", step,
        " is not a step count (a non-negative integer)"));
  }
  expected.insert(kStepName);
  for (const auto& [name, tensor] : state) {
    if (!expected.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state: unexpected tensor '", name, "' (no such parameter state)"));
    }
  }
  // Everything checked: copy.
  for (auto& [name, dst] : targets) {
    const Tensor& src = *given.at(name);
    if (src.dtype() == dst.dtype()) {
      dst.CopyFrom(src);
    } else {
      dst.CopyFrom(src.ConvertTo(dst.dtype()));
    }
  }
  // A restored master defines the parameter it shadows.
  for (Slot& slot : slots_) {
    if (slot.master.defined()) {
      slot.param.backend()->Convert(slot.master.dtype(), slot.master.data(), slot.param.dtype(),
                                    slot.param.data(), slot.param.numel());
    }
  }
  step_ = static_cast<int64_t>(step);
  return absl::OkStatus();
}

}  // namespace pmol
