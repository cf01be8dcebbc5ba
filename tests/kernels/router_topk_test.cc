// Backend::RouterTopK / RouterTopKBackward on the CPU. The forward against a selection
// written here (indices sorted by descending probability, ties to the lower slot, with
// ties planted on purpose); the backward against central finite differences of
// L(g) = sum_e w_e gates_e(g) through the forward itself, with inputs whose k-th and
// (k+1)-th probabilities are far apart so that no step changes the selection; f32 against
// f64; any thread count bit for bit. The backward accumulates into dg (checked with a
// nonzero start). Shapes: the benchmark router's 7 slots with 6 experts (one empty slot)
// and k = 1, 2, 3, and 12 slots with 9 experts, k = 5; capacity limits (each expert keeps
// the first C rows that selected it, the rest dropped: -1, gate 0, only the centre term
// in the backward) of 700 rows (of 3000, k = 2), 2 rows (k = 2: the backward test's 12
// rows drop some) and 3 rows (k = 1).
// Tolerances: gates are one division of values summed in a fixed order, so f64 within
// (k + 2) u of the long-double oracle; finite differences as kernel_test_util.h; f32 within
// (k + 6) u_f32 relative to the largest value of the row (the division and the sum, and
// the f32 rounding of the inputs, which are shared).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

struct TopKCase {
  int64_t slots, experts, k;
  int64_t capacity = 0;  // rows per expert, 0: no limit
};

// Rows of probabilities (each sums to 1) with a gap of >= 0.02 between neighbours of the
// sorted row, so a 1e-6 step cannot reorder them; every third row gets a planted tie.
std::vector<double> Probabilities(std::mt19937& rng, int64_t rows, int64_t slots, bool ties) {
  std::vector<double> g(rows * slots);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> v(slots);
    for (int64_t j = 0; j < slots; ++j) v[j] = 1.0 + 3.0 * static_cast<double>(j) + u(rng);
    std::shuffle(v.begin(), v.end(), rng);
    if (ties && r % 3 == 0 && slots > 2) v[slots - 1] = v[1];
    const double sum = std::accumulate(v.begin(), v.end(), 0.0);
    for (int64_t j = 0; j < slots; ++j) g[r * slots + j] = v[j] / sum;
  }
  return g;
}

struct Route {
  std::vector<double> selected, gates, top;
};

Route Oracle(const std::vector<double>& g, int64_t rows, const TopKCase& c) {
  Route out{std::vector<double>(rows * c.slots, 0.0), std::vector<double>(rows * c.experts, 0.0),
            std::vector<double>(rows, 0.0)};
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int64_t> idx(c.slots);
    std::iota(idx.begin(), idx.end(), int64_t{0});
    std::stable_sort(idx.begin(), idx.end(),
                     [&](int64_t a, int64_t b) { return g[r * c.slots + a] > g[r * c.slots + b]; });
    long double top = 0;
    for (int64_t j = 0; j < c.k; ++j) {
      out.selected[r * c.slots + idx[j]] = 1.0;
      top += g[r * c.slots + idx[j]];
    }
    out.top[r] = static_cast<double>(top);
    for (int64_t e = 0; e < c.experts; ++e) {
      if (out.selected[r * c.slots + e] != 0.0) {
        out.gates[r * c.experts + e] = static_cast<double>(g[r * c.slots + e] / top);
      }
    }
  }
  // Capacity: each expert keeps the first `capacity` rows that selected it.
  for (int64_t e = 0; c.capacity > 0 && e < c.experts; ++e) {
    int64_t kept = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (out.selected[r * c.slots + e] == 0.0) continue;
      if (kept < c.capacity) {
        ++kept;
      } else {
        out.selected[r * c.slots + e] = -1.0;
        out.gates[r * c.experts + e] = 0.0;
      }
    }
  }
  return out;
}

template <typename T>
Route RunTopK(int threads, const std::vector<double>& g, int64_t rows, const TopKCase& c) {
  std::vector<T> probs = Cast<T>(g), sel(rows * c.slots), gates(rows * c.experts), top(rows);
  Cpu(threads)->RouterTopK(DTypeOf<T>(), probs.data(), rows, c.slots, c.experts, c.k,
                           c.capacity, sel.data(), gates.data(), top.data());
  return {ToDouble(sel), ToDouble(gates), ToDouble(top)};
}

template <typename T>
std::vector<double> Backward(int threads, const Route& route, const std::vector<double>& dgates,
                             const std::vector<double>& dg0, int64_t rows, const TopKCase& c) {
  std::vector<T> sel = Cast<T>(route.selected), gates = Cast<T>(route.gates),
                 top = Cast<T>(route.top), dgk = Cast<T>(dgates), dg = Cast<T>(dg0);
  Cpu(threads)->RouterTopKBackward(DTypeOf<T>(), sel.data(), gates.data(), top.data(), dgk.data(),
                                   rows, c.slots, c.experts, dg.data());
  return ToDouble(dg);
}

class RouterTopKTest : public ::testing::TestWithParam<TopKCase> {};

TEST_P(RouterTopKTest, ForwardMatchesTheSortedSelection) {
  const TopKCase c = GetParam();
  const int64_t rows = 3000;  // enough to be split over the threads
  std::mt19937 rng(5 + c.k);
  const std::vector<double> g = Probabilities(rng, rows, c.slots, /*ties=*/true);
  const Route want = Oracle(g, rows, c);
  const Route got = RunTopK<double>(2, g, rows, c);
  EXPECT_EQ(got.selected, want.selected) << "the selection, ties to the lower slot";
  if (c.capacity > 0) {
    EXPECT_NE(std::count(got.selected.begin(), got.selected.end(), -1.0), 0) << "none dropped";
  }
  std::vector<double> bound(want.gates.size());
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = (c.k + 2) * kF64Unit * want.gates[i];
  ExpectWithin(got.gates, want.gates, bound, "gates");
  bound.assign(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) bound[r] = (c.k + 2) * kF64Unit * want.top[r];
  ExpectWithin(got.top, want.top, bound, "top");

  const std::vector<double> g32 = RoundToF32(g);
  const Route want32 = Oracle(g32, rows, c);
  const Route got32 = RunTopK<float>(2, g32, rows, c);
  EXPECT_EQ(got32.selected, want32.selected) << "f32 selection";
  bound.assign(want32.gates.size(), 0.0);
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = (c.k + 6) * kF32Unit;
  ExpectWithin(got32.gates, want32.gates, bound, "gates f32");

  for (int threads : {1, 3}) {
    const Route again = RunTopK<double>(threads, g, rows, c);
    ExpectBitwiseEqual(again.gates, got.gates, "gates, threads");
    ExpectBitwiseEqual(again.top, got.top, "top, threads");
  }
  Cpu(2);
}

TEST_P(RouterTopKTest, BackwardMatchesFiniteDifferences) {
  const TopKCase c = GetParam();
  const int64_t rows = 12;
  std::mt19937 rng(17 + c.k);
  std::vector<double> g = Probabilities(rng, rows, c.slots, /*ties=*/false);
  const std::vector<double> w = Uniform(rng, rows * c.experts);
  const std::vector<double> dg0 = Uniform(rng, rows * c.slots);
  const Route route = RunTopK<double>(2, g, rows, c);
  const std::vector<double> dg = Backward<double>(2, route, w, dg0, rows, c);
  std::vector<double> analytic(dg.size());
  for (size_t i = 0; i < dg.size(); ++i) analytic[i] = dg[i] - dg0[i];
  const std::vector<double> numeric =
      NumericGradient(&g, w, [&] { return RunTopK<double>(2, g, rows, c).gates; });
  ExpectGradientMatches(analytic, numeric, "dg");
  if (c.k == 1) {
    EXPECT_EQ(MaxAbs(analytic), 0.0) << "top-1 gates are 1 or 0: constant";
  } else {
    EXPECT_GT(MaxAbs(numeric), 1e-2) << "the check is not empty";
  }

  std::vector<double> bound(dg.size());
  const std::vector<double> d32 = Backward<float>(2, route, RoundToF32(w), RoundToF32(dg0), rows, c);
  const std::vector<double> d64 = Backward<double>(2, route, RoundToF32(w), RoundToF32(dg0), rows, c);
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = (c.k + 6) * kF32Unit * (1.0 + std::abs(d64[i])) * 4;
  ExpectWithin(d32, d64, bound, "dg f32");
}

INSTANTIATE_TEST_SUITE_P(Cases, RouterTopKTest,
                         ::testing::Values(TopKCase{7, 6, 1}, TopKCase{7, 6, 2},
                                           TopKCase{7, 6, 3}, TopKCase{12, 9, 5},
                                           TopKCase{7, 6, 2, 700}, TopKCase{7, 6, 2, 2},
                                           TopKCase{7, 6, 1, 3}),
                         [](const auto& info) {
                           return "Slots" + std::to_string(info.param.slots) + "K" +
                                  std::to_string(info.param.k) + "Capacity" +
                                  std::to_string(info.param.capacity);
                         });

}  // namespace
}  // namespace pmol::testing
