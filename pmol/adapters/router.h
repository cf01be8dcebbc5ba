// The PMoL router of one adapted layer, on router logits z [N, S] (S slots = experts in
// ExpertLayout order, then empty experts), computed in double on the host (N*S is small):
//   dense:  g = softmax(z / tau)                                   (probs, [N, S])
//   top-k:  T = the k largest g of a row (empty slots take part; ties: lower slot first)
//           gk_i = g_i / sum_{j in T} g_j for i in T, else 0;  k = 0 or k >= S: gk = g
//   capacity (top-k with capacity_factor c > 0): each expert takes at most
//           C = max(1, ceil(c * N * k / S)) rows, the first in row order; a selected
//           expert beyond C is dropped for that row: its gate is 0 (no renormalisation,
//           as GShard / Switch) and it gets no gradient. c = 0: dropless.
//   gates:  gk of the expert slots only ([N, E]; empty slots have no output; 0 where
//           dropped)
// Backward, from dL/dgates and an optional extra dL/dprobs (the auxiliary losses, which
// read the dense g):
//   dgk_i = dgates_i (experts), 0 (empty slots and dropped experts)
//   dg_j  = [j in T] (dgk_j - sum_{i in T} dgk_i gk_i) / s  (+ dprobs_j);  s = sum_T g
//   dz_j  = g_j (dg_j - sum_i g_i dg_i) / tau
#ifndef PMOL_ADAPTERS_ROUTER_H_
#define PMOL_ADAPTERS_ROUTER_H_

#include <cstdint>
#include <vector>

#include "pmol/adapters/expert_layout.h"

namespace pmol {

struct RouterState {
  int64_t rows = 0;
  bool dense = true;              // no top-k selection
  std::vector<double> probs;      // [N, S] dense softmax
  std::vector<double> gates;      // [N, E] gates the experts use
  std::vector<double> top_sum;    // [N] sum of the selected probs (1 when dense)
  std::vector<uint8_t> selected;  // [N, S] 1 where the slot is in the top-k (all when dense)
  std::vector<uint8_t> dropped;   // [N, E] 1 where a selected expert was over capacity
  int64_t capacity = 0;           // rows per expert; 0: no limit
  int64_t dropped_count = 0;
  // Whether expert e computes for row n (selected and not dropped).
  bool Routes(int64_t n, int64_t e, int64_t slots, int64_t experts) const {
    return selected[n * slots + e] && !dropped[n * experts + e];
  }
};

// C above: max(1, ceil(c * rows * k / slots)) for top-k routing with c > 0; 0 (no limit)
// for dense routing or c <= 0.
int64_t ExpertCapacity(double capacity_factor, int64_t rows, int32_t top_k, int64_t slots);

void RouterForward(const ExpertLayout& layout, double temperature, int32_t top_k,
                   double capacity_factor, const std::vector<double>& logits, int64_t rows,
                   RouterState* state);

// dgates [N, E]; dprobs [N, S] or empty. Returns dL/dlogits [N, S].
std::vector<double> RouterBackward(const ExpertLayout& layout, double temperature,
                                   const RouterState& state, const std::vector<double>& dgates,
                                   const std::vector<double>& dprobs);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_ROUTER_H_
