// PMoL's router losses on the CPU; see router_losses.h.
#include "kernels/cpu/router_losses.h"

#include "kernels/cpu/parallel.h"
#include "kernels/router_loss_math.h"

namespace pmol::cpu {

template <typename T>
void RouterGroupLoss(const T* probs, const int32_t* labels, const int32_t* expert_group,
                     int64_t rows, int64_t slots, int64_t experts, int64_t groups,
                     double label_smoothing, double grad_scale, T* ce, T* dprobs) {
  ParallelFor(rows, 4 * slots, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* dg = dprobs != nullptr ? dprobs + r * slots : nullptr;
      ce[r] = static_cast<T>(RouterGroupLossOfRow(probs + r * slots, labels[r], expert_group,
                                                  slots, experts, groups, label_smoothing,
                                                  grad_scale, dg));
    }
  });
}

template <typename T>
void RouterBalanceLoss(const T* mass, int64_t mass_stride, const int32_t* expert_group,
                       int64_t count, int64_t slots, int64_t experts, int64_t groups, T* loss,
                       T* dmass) {
  ParallelFor(count, 4 * slots, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      loss[c] = static_cast<T>(RouterBalanceLossOfMass(mass + c * mass_stride, expert_group,
                                                       slots, experts, groups,
                                                       dmass + c * slots));
    }
  });
}

#define PMOL_INSTANTIATE(T)                                                                   \
  template void RouterGroupLoss<T>(const T*, const int32_t*, const int32_t*, int64_t, int64_t, \
                                   int64_t, int64_t, double, double, T*, T*);                 \
  template void RouterBalanceLoss<T>(const T*, int64_t, const int32_t*, int64_t, int64_t,     \
                                     int64_t, int64_t, T*, T*);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cpu
