// See router_losses.h.
#include "pmol/objectives/router_losses.h"

#include <algorithm>
#include <cmath>

#include "pmol/objectives/host_transfer.h"

namespace pmol {
namespace {

constexpr double kMassFloor = 1e-30;

// g as host doubles, with its row count N; checks the slot dimension.
std::vector<double> RouterWeights(const ExpertLayout& layout, const Tensor& g, int64_t* rows) {
  const int64_t slots = layout.num_slots();
  PMOL_CHECK(slots > 0 && g.rank() >= 1 && g.dim(-1) == slots);
  for (int32_t e : layout.experts_per_group) PMOL_CHECK(e >= 1);
  *rows = g.numel() / slots;
  return g.ToDoubles();
}

void CheckGradTarget(const Tensor& g, const Tensor* dg) {
  if (dg == nullptr) return;
  PMOL_CHECK(dg->defined() && dg->numel() == g.numel() && dg->dtype() == g.dtype() &&
             dg->backend() == g.backend());
}

}  // namespace

double GroupSoftLoss(const ExpertLayout& layout, const Tensor& g,
                     const std::vector<int32_t>& labels, double label_smoothing,
                     double grad_scale, Tensor* dg) {
  int64_t rows = 0;
  const std::vector<double> w = RouterWeights(layout, g, &rows);
  CheckGradTarget(g, dg);
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
  if (dg != nullptr) objectives_internal::AccumulateDoubles(grad, grad_scale, dg);
  return total * inv;
}

double BalanceLoss(const ExpertLayout& layout, const Tensor& g, const std::vector<uint8_t>& weight,
                   double grad_scale, Tensor* dg) {
  int64_t rows = 0;
  const std::vector<double> w = RouterWeights(layout, g, &rows);
  CheckGradTarget(g, dg);
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
    objectives_internal::AccumulateDoubles(grad, grad_scale, dg);
  }
  return total / groups;
}

std::vector<double> RouterGroupMass(const ExpertLayout& layout, const Tensor& g,
                                    const std::vector<uint8_t>& select) {
  int64_t rows = 0;
  const std::vector<double> w = RouterWeights(layout, g, &rows);
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

}  // namespace pmol
