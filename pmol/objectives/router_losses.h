// PMoL's auxiliary router losses for ONE adapted layer (DESIGN section 1), and the
// router-mass metric. All read the router's dense softmax g [N, S] (N positions, S =
// layout.num_slots() slots in ExpertLayout order: experts group-major, then empties),
// before any top-k. g may be f32 or f64 on any backend; it is copied to host doubles.
//
// Group soft loss. For a labelled position n (label p in [0, P)):
//   s_k = sum_{i in G_k} g_i,  e = sum_{empty} g_e,  m_k = s_k / (1 - e)
//   y   = (1 - eps) onehot(p) + eps / P         (PyTorch's label smoothing)
//   CE  = -sum_k y_k log m_k = -sum_k y_k log s_k + log(1 - e)     (sum_k y_k = 1)
//   L_group = mean over labelled positions of CE   (0, no gradient, when none)
// Gradient, treating every g_i as a free variable (the formula exactly as written):
//   dCE/dg_i = -y_k / s_k     for expert i of group k
//   dCE/dg_e = -1 / (1 - e)   for every empty slot
// Decision: the normaliser is 1 - e as DESIGN writes it, not sum_k s_k. The two agree
// on the simplex (sum g = 1) and their gradients differ only by a per-row constant
// c * (1, ..., 1), which the softmax backward (dz = g * (dg - <g, dg>)) removes, so the
// gradient at the router logits is the same either way; dg itself is the literal one.
// Guards: s_k and 1 - e are floored at 1e-30 (only reachable when an f32 softmax
// underflows), and a term with y_k = 0 (eps = 0) contributes nothing.
//
// Balance loss. Over valid (non-padding) positions, each counted w_n times (w_n = 1; 2 for
// a prompt token that two sequences share in one row; 0 for padding):
//   M_i = sum_n w_n g[n, i];   for group k with E_k experts, mu = mean_{i in G_k} M_i,
//   A = mean_{i in G_k} M_i^2:     CV2_k = var/mu^2 = A/mu^2 - 1 (population variance)
//   L_bal = mean over the P groups of CV2_k   (a 1-expert group contributes 0; mu == 0 -> 0)
//   dL_bal/dg[n, i] = w_n (1/P) * 2 / (E_k mu^2) * (M_i - A/mu)   for expert i in G_k
//   (0 for empty slots and invalid positions).
//
// Reductions across layers: the caller averages over adapted layers by passing
// grad_scale = weight / num_layers and scaling the returned value the same way.
#ifndef PMOL_OBJECTIVES_ROUTER_LOSSES_H_
#define PMOL_OBJECTIVES_ROUTER_LOSSES_H_

#include <cstdint>
#include <vector>

#include "pmol/adapters/expert_layout.h"
#include "pmol/core/tensor.h"

namespace pmol {

// g: [..., S] viewed as [N, S]. labels [N]: preference in [0, P), or -1 (not counted).
// Returns L_group (unscaled). If dg is non-null it must have g's shape (element count),
// dtype (f32/f64) and backend, and gets dg += grad_scale * dL_group/dg.
double GroupSoftLoss(const ExpertLayout& layout, const Tensor& g,
                     const std::vector<int32_t>& labels, double label_smoothing,
                     double grad_scale, Tensor* dg);

// weight [N]: how many times each position counts (0 = padding). Returns L_bal
// (unscaled); dg as above.
double BalanceLoss(const ExpertLayout& layout, const Tensor& g, const std::vector<uint8_t>& weight,
                   double grad_scale, Tensor* dg);

// Router mass per group over the selected positions (select [N], 1 = included):
// entry k < P is mean_n sum_{i in G_k} g[n, i]; entry P is the empty slots' mean mass.
// All zeros when no position is selected.
std::vector<double> RouterGroupMass(const ExpertLayout& layout, const Tensor& g,
                                    const std::vector<uint8_t>& select);

// The same on host doubles, for a caller that reads g once for several of them: g is
// [N, S] row-major (as Tensor::ToDoubles gives it) and dg, when not null, a host [N, S]
// that gets dg += grad_scale * dL/dg. The Tensor forms above copy g to the host and call
// these.
double GroupSoftLoss(const ExpertLayout& layout, const std::vector<double>& g,
                     const std::vector<int32_t>& labels, double label_smoothing,
                     double grad_scale, std::vector<double>* dg);
double BalanceLoss(const ExpertLayout& layout, const std::vector<double>& g,
                   const std::vector<uint8_t>& weight, double grad_scale,
                   std::vector<double>* dg);
std::vector<double> RouterGroupMass(const ExpertLayout& layout, const std::vector<double>& g,
                                    const std::vector<uint8_t>& select);

}  // namespace pmol

#endif  // PMOL_OBJECTIVES_ROUTER_LOSSES_H_
