// PMoL's auxiliary router losses (DESIGN section 1) and router-mass metrics of every adapted
// module of a step, on the device that holds the routers' probabilities: nothing comes to
// the host but a few numbers per module, in one copy (RouterLossBatch::Read). All read a
// router's dense softmax g [N, S] (N positions, S = layout.num_slots() slots in
// ExpertLayout order: experts group-major, then empties), before any top-k. The per-row
// math is kernels/router_loss_math.h (Backend::RouterGroupLoss / RouterBalanceLoss); the
// sums over positions are GEMMs against a [N, P + 1] position-weight matrix W:
//   W[n, p] = [label_n = p] for p < P,  W[n, P] = w_n (L_bal's weight, below),
//   slot sums  C = W^T g  [P + 1, S];  L_group's per-preference sums = ce^T W;
//   L_bal's gradient  dg += scale * W[:, P] dM^T  (a rank-1 update, dM from C's row P).
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
// Reductions across modules: the caller averages over adapted modules by passing
// grad_scale = weight / num_modules and averaging the per-module figures the same way.
#ifndef PMOL_OBJECTIVES_ROUTER_LOSSES_H_
#define PMOL_OBJECTIVES_ROUTER_LOSSES_H_

#include <cstdint>
#include <vector>

#include "pmol/adapters/expert_layout.h"
#include "pmol/core/tensor.h"

namespace pmol {

// The figures of a RouterLossBatch, on the host. P = layout.num_groups() preferences.
struct RouterLossFigures {
  int64_t modules = 0, preferences = 0, slots = 0;
  std::vector<double> group;    // [modules] L_group (0 when no position is labelled)
  std::vector<double> balance;  // [modules] L_bal
  std::vector<int64_t> positions;  // [P + 1] labelled positions per preference, then all
  // [modules][P + 1][S]: module j's sum of g over the positions labelled p (p < P), and at
  // p = P the weighted sum over every non-padding position (L_bal's M_i).
  std::vector<double> slot_sums;

  const double* SlotSums(int64_t module, int64_t p) const {
    return slot_sums.data() + (module * (preferences + 1) + p) * slots;
  }
  // Router mass of module j over the positions labelled p (p = P: every labelled one):
  // entry k < P is mean_n sum_{i in G_k} g[n, i], entry P the empty slots' mean mass
  // (all zeros when there is no such position).
  std::vector<double> GroupMass(const ExpertLayout& layout, int64_t module, int64_t p) const;
};

// One step's router losses over `modules` routers that share the positions (labels, weight).
// Every call only queues work on the probabilities' backend; Read() waits for it.
class RouterLossBatch {
 public:
  // labels [N]: the position's preference in [0, P) (the expert group L_group pulls it
  // to), or -1 (not in L_group nor in the router mass); weight [N]: how many times L_bal
  // counts the position (0 = padding). Both are copied to `backend`.
  RouterLossBatch(const ExpertLayout& layout, const std::vector<int32_t>& labels,
                  const std::vector<uint8_t>& weight, int64_t modules, Backend* backend);

  // Module j's router probabilities g (f64 [N, S] on the backend): its L_group terms and
  // slot sums. With dg (f64, g's element count), dg = group_grad_scale * dL_group/dg
  // (overwritten).
  void AddModule(int64_t j, const Tensor& g, double label_smoothing, double group_grad_scale,
                 Tensor* dg);

  // After one AddModule per module: each module's L_bal, and dgs[j] += balance_grad_scale *
  // dL_bal/dg for every j whose dgs[j] is not null (dgs empty: no gradient).
  void Finish(double balance_grad_scale, const std::vector<Tensor*>& dgs);

  // After Finish: every figure, in one copy to the host.
  RouterLossFigures Read() const;

 private:
  ExpertLayout layout_;
  int64_t rows_, modules_, preferences_, slots_, labelled_ = 0, added_ = 0;
  std::vector<int64_t> positions_;
  Backend* backend_;
  Tensor labels_;        // i32 [N]
  Tensor expert_group_;  // i32 [experts]
  Tensor weights_;       // f64 [N, P + 1]: W
  Tensor ce_;            // f64 [modules, N]: each position's group cross-entropy
  Tensor dmass_;         // f64 [modules, S]: dL_bal/dM
  // f64: [modules, P + 1, S] slot sums | [modules, P + 1] L_group sums | [modules] L_bal.
  Tensor results_;
  bool finished_ = false;
};

// L_bal of one router from its weighted slot mass M [S] (host doubles): for merging the
// sums of several batches.
double BalanceLossOfSlotSums(const ExpertLayout& layout, const std::vector<double>& slot_sums);

}  // namespace pmol

#endif  // PMOL_OBJECTIVES_ROUTER_LOSSES_H_
