// See router_losses.h.
#include "pmol/objectives/router_losses.h"

#include <algorithm>
#include <cmath>

#include "pmol/objectives/host_transfer.h"

namespace pmol {
namespace {

constexpr double kMassFloor = 1e-30;

// The row count N of router weights g [N, S] on the host; checks the slot dimension.
int64_t RouterRows(const ExpertLayout& layout, const std::vector<double>& g) {
  const int64_t slots = layout.num_slots();
  PMOL_CHECK(slots > 0 && static_cast<int64_t>(g.size()) % slots == 0);
  for (int32_t e : layout.experts_per_group) PMOL_CHECK(e >= 1);
  return static_cast<int64_t>(g.size()) / slots;
}

void CheckTensorForms(const ExpertLayout& layout, const Tensor& g, const Tensor* dg) {
  PMOL_CHECK(g.rank() >= 1 && g.dim(-1) == layout.num_slots());
  if (dg == nullptr) return;
  PMOL_CHECK(dg->defined() && dg->numel() == g.numel() && dg->dtype() == g.dtype() &&
             dg->backend() == g.backend());
}

// dg_host += grad_scale * grad.
void AddScaled(const std::vector<double>& grad, double grad_scale, std::vector<double>* dg_host) {
  PMOL_CHECK(dg_host->size() == grad.size());
  for (size_t i = 0; i < grad.size(); ++i) (*dg_host)[i] += grad_scale * grad[i];
}

}  // namespace

double GroupSoftLoss(const ExpertLayout& layout, const std::vector<double>& w,
                     const std::vector<int32_t>& labels, double label_smoothing,
                     double grad_scale, std::vector<double>* dg) {
  const int64_t rows = RouterRows(layout, w);
  PMOL_CHECK(static_cast<int64_t>(labels.size()) == rows);
  const int32_t groups = layout.num_groups(), experts = layout.num_experts();
  const int64_t slots = layout.num_slots();
  std::vector<int32_t> group_of(slots);
  for (int32_t s = 0; s < slots; ++s) group_of[s] = layout.group_of(s);

  int64_t labelled = 0;
  for (int32_t p : labels) {
    PMOL_CHECK(p < groups);
    labelled += p >= 0;
  }
  if (labelled == 0) return 0.0;
  const double inv = 1.0 / static_cast<double>(labelled);
  const double eps = label_smoothing;
  std::vector<double> grad(dg != nullptr ? w.size() : 0, 0.0);
  std::vector<double> mass(groups), target(groups);
  double total = 0;
  for (int64_t n = 0; n < rows; ++n) {
    const int32_t p = labels[n];
    if (p < 0) continue;
    const double* gn = w.data() + n * slots;
    std::fill(mass.begin(), mass.end(), 0.0);
    double empty = 0;
    for (int32_t s = 0; s < slots; ++s) {
      if (s < experts) {
        mass[group_of[s]] += gn[s];
      } else {
        empty += gn[s];
      }
    }
    const double denom = std::max(1.0 - empty, kMassFloor);
    double ce = 0;
    for (int32_t k = 0; k < groups; ++k) {
      target[k] = (k == p ? 1.0 - eps : 0.0) + eps / groups;
      mass[k] = std::max(mass[k], kMassFloor);
      if (target[k] != 0) ce -= target[k] * (std::log(mass[k]) - std::log(denom));
    }
    total += ce;
    if (dg == nullptr) continue;
    double target_sum = 0;
    for (int32_t k = 0; k < groups; ++k) target_sum += target[k];
    double* gr = grad.data() + n * slots;
    for (int32_t s = 0; s < slots; ++s) {
      if (s < experts) {
        const int32_t k = group_of[s];
        gr[s] = target[k] == 0 ? 0.0 : -target[k] / mass[k] * inv;
      } else {
        gr[s] = -target_sum / denom * inv;
      }
    }
  }
  if (dg != nullptr) AddScaled(grad, grad_scale, dg);
  return total * inv;
}

double BalanceLoss(const ExpertLayout& layout, const std::vector<double>& w,
                   const std::vector<uint8_t>& weight, double grad_scale,
                   std::vector<double>* dg) {
  const int64_t rows = RouterRows(layout, w);
  PMOL_CHECK(static_cast<int64_t>(weight.size()) == rows);
  const int32_t groups = layout.num_groups(), experts = layout.num_experts();
  const int64_t slots = layout.num_slots();
  std::vector<double> mass(experts, 0.0);
  for (int64_t n = 0; n < rows; ++n) {
    if (!weight[n]) continue;
    for (int32_t i = 0; i < experts; ++i) mass[i] += weight[n] * w[n * slots + i];
  }
  // dL/dM_i; position n's gradient is w_n times it.
  std::vector<double> dmass(experts, 0.0);
  double total = 0;
  for (int32_t k = 0; k < groups; ++k) {
    const int32_t first = layout.first_expert(k), count = layout.experts_per_group[k];
    if (count < 2) continue;
    double mu = 0, a = 0;
    for (int32_t i = first; i < first + count; ++i) {
      mu += mass[i];
      a += mass[i] * mass[i];
    }
    mu /= count;
    a /= count;
    if (mu == 0) continue;
    double var = 0;  // computed from deviations: no cancellation in A - mu^2
    for (int32_t i = first; i < first + count; ++i) var += (mass[i] - mu) * (mass[i] - mu);
    var /= count;
    total += var / (mu * mu);
    for (int32_t i = first; i < first + count; ++i)
      dmass[i] = 2.0 / (count * mu * mu) * (mass[i] - a / mu) / groups;
  }
  if (dg != nullptr) {
    std::vector<double> grad(w.size(), 0.0);
    for (int64_t n = 0; n < rows; ++n) {
      if (!weight[n]) continue;
      for (int32_t i = 0; i < experts; ++i) grad[n * slots + i] = weight[n] * dmass[i];
    }
    AddScaled(grad, grad_scale, dg);
  }
  return total / groups;
}

std::vector<double> RouterGroupMass(const ExpertLayout& layout, const std::vector<double>& w,
                                    const std::vector<uint8_t>& select) {
  const int64_t rows = RouterRows(layout, w);
  PMOL_CHECK(static_cast<int64_t>(select.size()) == rows);
  const int32_t groups = layout.num_groups(), experts = layout.num_experts();
  const int64_t slots = layout.num_slots();
  std::vector<double> out(groups + 1, 0.0);
  int64_t count = 0;
  for (int64_t n = 0; n < rows; ++n) {
    if (!select[n]) continue;
    ++count;
    for (int32_t s = 0; s < slots; ++s)
      out[s < experts ? layout.group_of(s) : groups] += w[n * slots + s];
  }
  if (count > 0)
    for (double& v : out) v /= static_cast<double>(count);
  return out;
}

double GroupSoftLoss(const ExpertLayout& layout, const Tensor& g,
                     const std::vector<int32_t>& labels, double label_smoothing,
                     double grad_scale, Tensor* dg) {
  CheckTensorForms(layout, g, dg);
  std::vector<double> grad(dg != nullptr ? g.numel() : 0, 0.0);
  const double loss = GroupSoftLoss(layout, g.ToDoubles(), labels, label_smoothing, grad_scale,
                                    dg != nullptr ? &grad : nullptr);
  if (dg != nullptr) objectives_internal::AccumulateDoubles(grad, 1.0, dg);
  return loss;
}

double BalanceLoss(const ExpertLayout& layout, const Tensor& g, const std::vector<uint8_t>& weight,
                   double grad_scale, Tensor* dg) {
  CheckTensorForms(layout, g, dg);
  std::vector<double> grad(dg != nullptr ? g.numel() : 0, 0.0);
  const double loss =
      BalanceLoss(layout, g.ToDoubles(), weight, grad_scale, dg != nullptr ? &grad : nullptr);
  if (dg != nullptr) objectives_internal::AccumulateDoubles(grad, 1.0, dg);
  return loss;
}

std::vector<double> RouterGroupMass(const ExpertLayout& layout, const Tensor& g,
                                    const std::vector<uint8_t>& select) {
  CheckTensorForms(layout, g, nullptr);
  return RouterGroupMass(layout, g.ToDoubles(), select);
}

}  // namespace pmol
