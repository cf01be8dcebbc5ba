// PMoL's auxiliary router losses for one position (group soft loss) or one router (balance
// loss), computed in double whatever the storage type T. Both backends run this very code:
// kernels/cpu/router_losses.cc over rows on its threads, kernels/cuda/router_losses.cu one
// GPU thread per row. Why the formulas are these: pmol/objectives/router_losses.h.
//
// Slots of a router: experts 0..experts-1, expert e in group expert_group[e] (non-decreasing
// from 0 to groups-1, so a group is a run of consecutive experts), then the empty slots.
//
// Group soft loss of one position's probabilities g [slots] with label p in [0, groups):
//   s_k = max(sum_{e in G_k} g_e, 1e-30),   d = max(1 - sum_{empty} g, 1e-30)
//   y_k = (1 - eps) [k == p] + eps / groups                 (label smoothing)
//   ce  = -sum_{k: y_k != 0} y_k (log s_k - log d)
//   dg_e     = scale * (-y_k / s_k)     for expert e of group k (0 when y_k = 0)
//   dg_empty = scale * (-sum_k y_k / d)
// Balance loss of one router's weighted slot mass M [experts]: per group k of E_k >= 2
// experts whose mean mass mu = mean_{i in G_k} M_i is not 0, with A = mean M_i^2 and
// var = mean (M_i - mu)^2 (from deviations: no cancellation),
//   loss = sum_k (var / mu^2) / groups,   dM_i = 2 (M_i - A / mu) / (E_k mu^2 groups),
// and dM = 0 for every other slot (experts of other groups, empty slots).
#ifndef PMOL_KERNELS_ROUTER_LOSS_MATH_H_
#define PMOL_KERNELS_ROUTER_LOSS_MATH_H_

#include <cmath>
#include <cstdint>

#include "kernels/dtype.h"

namespace pmol {

constexpr double kRouterMassFloor = 1e-30;

PMOL_HOST_DEVICE inline double RouterMassFloored(double mass) {
  return mass < kRouterMassFloor ? kRouterMassFloor : mass;
}

// Returns ce; writes dg [slots] when dg is not null. A negative label (a position the loss
// does not count): ce 0 and dg 0.
template <typename T>
PMOL_HOST_DEVICE inline double RouterGroupLossOfRow(const T* g, int32_t label,
                                                    const int32_t* expert_group, int64_t slots,
                                                    int64_t experts, int64_t groups, double eps,
                                                    double scale, T* dg) {
  if (label < 0) {
    if (dg != nullptr)
      for (int64_t s = 0; s < slots; ++s) dg[s] = T(0);
    return 0.0;
  }
  double empty = 0;
  for (int64_t s = experts; s < slots; ++s) empty += static_cast<double>(g[s]);
  const double denom = RouterMassFloored(1.0 - empty);
  const double log_denom = log(denom);
  double ce = 0, target_sum = 0;
  for (int64_t first = 0, end = 0; first < experts; first = end) {
    const int32_t k = expert_group[first];
    double mass = 0;
    for (end = first; end < experts && expert_group[end] == k; ++end) {
      mass += static_cast<double>(g[end]);
    }
    mass = RouterMassFloored(mass);
    const double target = (k == label ? 1.0 - eps : 0.0) + eps / static_cast<double>(groups);
    target_sum += target;
    if (target != 0) ce -= target * (log(mass) - log_denom);
    if (dg == nullptr) continue;
    const double grad = target == 0 ? 0.0 : -target / mass * scale;
    for (int64_t e = first; e < end; ++e) dg[e] = static_cast<T>(grad);
  }
  if (dg != nullptr) {
    const double grad = -target_sum / denom * scale;
    for (int64_t s = experts; s < slots; ++s) dg[s] = static_cast<T>(grad);
  }
  return ce;
}

// Returns the loss; writes dmass [slots].
template <typename T>
PMOL_HOST_DEVICE inline double RouterBalanceLossOfMass(const T* mass, const int32_t* expert_group,
                                                       int64_t slots, int64_t experts,
                                                       int64_t groups, T* dmass) {
  for (int64_t s = 0; s < slots; ++s) dmass[s] = T(0);
  double total = 0;
  for (int64_t first = 0, end = 0; first < experts; first = end) {
    const int32_t k = expert_group[first];
    for (end = first; end < experts && expert_group[end] == k;) ++end;
    const int64_t count = end - first;
    if (count < 2) continue;
    double mu = 0, a = 0;
    for (int64_t i = first; i < end; ++i) {
      const double m = static_cast<double>(mass[i]);
      mu += m;
      a += m * m;
    }
    mu /= static_cast<double>(count);
    a /= static_cast<double>(count);
    if (mu == 0) continue;
    double var = 0;
    for (int64_t i = first; i < end; ++i) {
      const double dev = static_cast<double>(mass[i]) - mu;
      var += dev * dev;
    }
    var /= static_cast<double>(count);
    total += var / (mu * mu);
    const double coef = 2.0 / (static_cast<double>(count) * mu * mu) / static_cast<double>(groups);
    for (int64_t i = first; i < end; ++i) {
      dmass[i] = static_cast<T>(coef * (static_cast<double>(mass[i]) - a / mu));
    }
  }
  return total / static_cast<double>(groups);
}

}  // namespace pmol

#endif  // PMOL_KERNELS_ROUTER_LOSS_MATH_H_
