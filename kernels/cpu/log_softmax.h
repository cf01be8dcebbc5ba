// Log-probability of target tokens on the CPU, one row of `vocab` logits per token:
//   lse_r = log sum_v exp(x_rv),  logp_r = x_{r,t_r} - lse_r   (0 when t_r < 0)
// Backward: dx_rv = dlogp_r * ([v == t_r] - exp(x_rv - lse_r))   (0 when t_r < 0)
#ifndef PMOL_KERNELS_CPU_LOG_SOFTMAX_H_
#define PMOL_KERNELS_CPU_LOG_SOFTMAX_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void LogSoftmaxGather(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                      T* logp, T* lse);

template <typename T>
void LogSoftmaxGatherBackward(const T* logits, const int32_t* targets, const T* lse,
                              const T* dlogp, int64_t rows, int64_t vocab, T* dlogits);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_LOG_SOFTMAX_H_
