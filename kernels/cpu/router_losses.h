// PMoL's router losses on the CPU (backend.h RouterGroupLoss / RouterBalanceLoss): the
// per-row and per-router math of kernels/router_loss_math.h, rows (routers) split over the
// kernels' threads. Each row's result depends on that row alone, so results do not depend
// on the thread count.
#ifndef PMOL_KERNELS_CPU_ROUTER_LOSSES_H_
#define PMOL_KERNELS_CPU_ROUTER_LOSSES_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void RouterGroupLoss(const T* probs, const int32_t* labels, const int32_t* expert_group,
                     int64_t rows, int64_t slots, int64_t experts, int64_t groups,
                     double label_smoothing, double grad_scale, T* ce, T* dprobs);

template <typename T>
void RouterBalanceLoss(const T* mass, int64_t mass_stride, const int32_t* expert_group,
                       int64_t count, int64_t slots, int64_t experts, int64_t groups, T* loss,
                       T* dmass);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_ROUTER_LOSSES_H_
