// Optimizer CPU kernels (T = float or double):
//   AdamWStep: one torch.optim.AdamW update in place (math in kernels/backend.h):
//     p = p*(1 - lr*wd);  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//     p = p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps)
//   SumSquares: sum_i x[i]^2 in f64, over fixed chunks of kSumSquaresChunk elements (each
//     summed in order with kSumSquaresLanes interleaved accumulators, added lane by lane),
//     then the chunk sums in chunk order: the result depends only on x, never on the
//     thread count.
#ifndef PMOL_KERNELS_CPU_OPTIMIZER_H_
#define PMOL_KERNELS_CPU_OPTIMIZER_H_

#include <cstdint>

#include "kernels/backend.h"

namespace pmol::cpu {

inline constexpr int64_t kSumSquaresChunk = 1 << 14;
inline constexpr int kSumSquaresLanes = 8;

template <typename T>
void AdamWStep(const AdamWScalars& s, T* p, const T* g, T* m, T* v, int64_t n);

template <typename T>
double SumSquares(const T* x, int64_t n);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_OPTIMIZER_H_
