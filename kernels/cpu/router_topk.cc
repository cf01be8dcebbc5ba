// Top-k routing and its backward; see router_topk.h.
#include "kernels/cpu/router_topk.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void RouterTopK(const T* probs, int64_t rows, int64_t slots, int64_t experts, int64_t k,
                int64_t capacity, T* selected, T* gates, T* top) {
  k = std::clamp<int64_t>(k, 0, slots);
  ParallelFor(rows, slots * (k + 2), [&](int64_t b, int64_t e) {
    std::vector<int64_t> order(slots);
    for (int64_t r = b; r < e; ++r) {
      const T* g = probs + r * slots;
      T* sel = selected + r * slots;
      std::iota(order.begin(), order.end(), int64_t{0});
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t x, int64_t y) {
        return g[x] > g[y] || (g[x] == g[y] && x < y);
      });
      std::fill(sel, sel + slots, T(0));
      T sum = 0;
      for (int64_t j = 0; j < k; ++j) {
        sel[order[j]] = T(1);
        sum += g[order[j]];
      }
      top[r] = sum;
      for (int64_t i = 0; i < experts; ++i) gates[r * experts + i] = sel[i] != T(0) ? g[i] / sum : T(0);
    }
  });
  if (capacity <= 0) return;
  ParallelFor(experts, rows, [&](int64_t b, int64_t e) {
    for (int64_t x = b; x < e; ++x) {
      int64_t taken = 0;
      for (int64_t r = 0; r < rows; ++r) {
        if (selected[r * slots + x] == T(0)) continue;
        if (taken++ < capacity) continue;
        selected[r * slots + x] = T(-1);
        gates[r * experts + x] = T(0);
      }
    }
  });
}

template <typename T>
void RouterTopKBackward(const T* selected, const T* gates, const T* top, const T* dgates,
                        int64_t rows, int64_t slots, int64_t experts, T* dg) {
  ParallelFor(rows, 2 * slots, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* dgk = dgates + r * experts;
      const T* gk = gates + r * experts;
      const T* sel = selected + r * slots;
      T centre = 0;
      for (int64_t i = 0; i < experts; ++i) centre += dgk[i] * gk[i];
      for (int64_t j = 0; j < slots; ++j) {
        if (sel[j] == T(0)) continue;
        const T up = j < experts && sel[j] > T(0) ? dgk[j] : T(0);
        dg[r * slots + j] += (up - centre) / top[r];
      }
    }
  });
}

template void RouterTopK<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                float*, float*, float*);
template void RouterTopK<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 double*, double*, double*);
template void RouterTopKBackward<float>(const float*, const float*, const float*, const float*,
                                        int64_t, int64_t, int64_t, float*);
template void RouterTopKBackward<double>(const double*, const double*, const double*,
                                         const double*, int64_t, int64_t, int64_t, double*);

}  // namespace pmol::cpu
