// Top-k routing over a router's probabilities (pmol/adapters/router.h's selection, on the
// device side of the Backend), per row r of probs g [rows, slots]:
//   T_r      = the k slots of largest g (ties: the lower slot first)
//   top[r]   = sum_{j in T_r} g[r, j]   (summed in that order: largest first)
//   gates[r, e]    = g[r, e] / top[r] for e < experts in T_r, else 0
//   capacity C > 0: expert e keeps the first C rows, in row order, whose T_r holds it; in
//                   a later row it is dropped: gates[r, e] = 0 (no renormalisation)
//   selected[r, j] = 1 for j in T_r routed, -1 for j in T_r dropped, 0 for j not in T_r
// Backward, from dL/dgates [rows, experts], accumulated into dg [rows, slots]:
//   c_r = sum_{e < experts} dgates[r, e] gates[r, e]
//   dg[r, j] += [selected[r, j] != 0] (u_j - c_r) / top[r],
//   u_j = dgates[r, j] if j < experts and selected[r, j] = 1, else 0
// Rows in parallel (parallel.h), each on its own, then the capacity pass over each
// expert's column in row order; results do not depend on the thread count.
#ifndef PMOL_KERNELS_CPU_ROUTER_TOPK_H_
#define PMOL_KERNELS_CPU_ROUTER_TOPK_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void RouterTopK(const T* probs, int64_t rows, int64_t slots, int64_t experts, int64_t k,
                int64_t capacity, T* selected, T* gates, T* top);

template <typename T>
void RouterTopKBackward(const T* selected, const T* gates, const T* top, const T* dgates,
                        int64_t rows, int64_t slots, int64_t experts, T* dg);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_ROUTER_TOPK_H_
