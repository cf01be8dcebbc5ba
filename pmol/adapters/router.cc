// Router softmax, top-k renormalisation and their backward; see router.h.
#include "pmol/adapters/router.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/check.h"

namespace pmol {

int64_t ExpertCapacity(double capacity_factor, int64_t rows, int32_t top_k, int64_t slots) {
  const bool dense = top_k <= 0 || top_k >= slots;
  if (dense || capacity_factor <= 0) return 0;
  return std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(capacity_factor * rows * top_k / static_cast<double>(slots))));
}

void RouterForward(const ExpertLayout& layout, double temperature, int32_t top_k,
                   double capacity_factor, const std::vector<double>& logits, int64_t rows,
                   RouterState* st) {
  const int64_t S = layout.num_slots(), E = layout.num_experts();
  PMOL_CHECK(static_cast<int64_t>(logits.size()) == rows * S);
  const bool dense = top_k <= 0 || top_k >= S;
  st->rows = rows;
  st->dense = dense;
  st->probs.assign(rows * S, 0.0);
  st->gates.assign(rows * E, 0.0);
  st->top_sum.assign(rows, 1.0);
  st->selected.assign(rows * S, dense ? 1 : 0);
  st->dropped.assign(rows * E, 0);
  st->dropped_count = 0;
  st->capacity = ExpertCapacity(capacity_factor, rows, top_k, S);
  std::vector<int64_t> taken(E, 0);
  std::vector<int32_t> order(S);
  for (int64_t n = 0; n < rows; ++n) {
    const double* z = logits.data() + n * S;
    double* g = st->probs.data() + n * S;
    double max_z = z[0];
    for (int64_t i = 1; i < S; ++i) max_z = std::max(max_z, z[i]);
    double sum = 0;
    for (int64_t i = 0; i < S; ++i) sum += (g[i] = std::exp((z[i] - max_z) / temperature));
    for (int64_t i = 0; i < S; ++i) g[i] /= sum;
    double* gates = st->gates.data() + n * E;
    if (dense) {
      for (int64_t i = 0; i < E; ++i) gates[i] = g[i];
      continue;
    }
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                      [&](int32_t a, int32_t b) { return g[a] > g[b] || (g[a] == g[b] && a < b); });
    double top = 0;
    for (int32_t j = 0; j < top_k; ++j) {
      st->selected[n * S + order[j]] = 1;
      top += g[order[j]];
    }
    st->top_sum[n] = top;
    for (int64_t i = 0; i < E; ++i) {
      if (!st->selected[n * S + i]) continue;
      if (st->capacity > 0 && taken[i] >= st->capacity) {
        st->dropped[n * E + i] = 1;
        ++st->dropped_count;
        continue;
      }
      ++taken[i];
      gates[i] = g[i] / top;
    }
  }
}

std::vector<double> RouterBackward(const ExpertLayout& layout, double temperature,
                                   const RouterState& st, const std::vector<double>& dgates,
                                   const std::vector<double>& dprobs) {
  const int64_t S = layout.num_slots(), E = layout.num_experts(), rows = st.rows;
  PMOL_CHECK(static_cast<int64_t>(dgates.size()) == rows * E);
  PMOL_CHECK(dprobs.empty() || static_cast<int64_t>(dprobs.size()) == rows * S);
  std::vector<double> dz(rows * S), dg(S);
  for (int64_t n = 0; n < rows; ++n) {
    const double* g = st.probs.data() + n * S;
    const double* gates = st.gates.data() + n * E;
    const double* dgk = dgates.data() + n * E;
    const uint8_t* sel = st.selected.data() + n * S;
    // Through the renormalisation over the selected set; dense routing has none.
    const bool dense = st.dense;
    double centre = 0;
    if (!dense)
      for (int64_t i = 0; i < E; ++i) centre += dgk[i] * gates[i];
    for (int64_t j = 0; j < S; ++j) {
      const double upstream = j < E && !st.dropped[n * E + j] ? dgk[j] : 0.0;
      dg[j] = dense ? upstream : (sel[j] ? (upstream - centre) / st.top_sum[n] : 0.0);
      if (!dprobs.empty()) dg[j] += dprobs[n * S + j];
    }
    double dot = 0;
    for (int64_t j = 0; j < S; ++j) dot += g[j] * dg[j];
    for (int64_t j = 0; j < S; ++j) dz[n * S + j] = g[j] * (dg[j] - dot) / temperature;
  }
  return dz;
}

}  // namespace pmol
