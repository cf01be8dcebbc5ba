// Causal grouped-query attention on the CPU (exact, no dropout).
// Layouts: q [B,T,Hq,D], k/v [B,T,Hkv,D], out [B,T,Hq,D], lse [B,Hq,T]; query head h
// reads kv head h / (Hq/Hkv). For query i of head h:
//   s_j = scale * q_i.k_j (j <= i),  lse_i = log sum_j exp(s_j),  p_j = exp(s_j - lse_i),
//   o_i = sum_j p_j v_j
// Backward (from the saved lse, no stored probabilities):
//   dv_j += p_j do_i,  dp_j = do_i.v_j,  D_i = do_i.o_i,  ds_j = p_j (dp_j - D_i),
//   dq_i = scale sum_j ds_j k_j,  dk_j += scale ds_j q_i
#ifndef PMOL_KERNELS_CPU_ATTENTION_H_
#define PMOL_KERNELS_CPU_ATTENTION_H_

#include "kernels/backend.h"

namespace pmol::cpu {

template <typename T>
void AttentionForward(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out,
                      T* lse);

template <typename T>
void AttentionBackward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                       const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_ATTENTION_H_
