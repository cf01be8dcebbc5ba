// Backend::RouterGroupLoss / RouterBalanceLoss on the CPU (the math of
// kernels/router_loss_math.h). The forward values against a long-double reference written
// here in the literal form of pmol/objectives/router_losses.h (CE = -sum_k y_k log m_k with
// m_k = s_k / (1 - e); CV^2 = var / mu^2 from a two-pass variance), including a row whose
// group mass underflows to the 1e-30 floor; both gradients against central finite
// differences in f64 of the op's own output; rows with a negative label (ce 0, dprobs 0
// over a NaN-filled buffer); a null dprobs (ce unchanged); the balance loss reading rows
// with a stride (NaN padding never read); f32 against f64; 1 thread against 2 bit for bit.
// Layouts: 1-4 groups of 1-3 experts, 0-2 empty slots, the benchmark's {2, 2, 2} + 1.
// Tolerances:
//   f64 against long double: a row is a few dozen operations on O(1) values, each within u
//     = 2^-53, then a log (< 1 ulp): 64 u (|value| + 1) leaves a wide margin;
//   finite differences: kernel_test_util.h (1e-7 (1 + |g|));
//   f32 against f64 on the same (f32-rounded) inputs: both instantiations compute in double,
//     so the f32 output is the f64 output rounded once (u_f32 |x|); 2 u_f32 |x| allows a
//     different FMA contraction between the two instantiations.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

struct Layout {
  std::vector<int32_t> experts_per_group;
  int32_t empty;

  int64_t groups() const { return static_cast<int64_t>(experts_per_group.size()); }
  int64_t experts() const {
    int64_t n = 0;
    for (int32_t e : experts_per_group) n += e;
    return n;
  }
  int64_t slots() const { return experts() + empty; }
  std::vector<int32_t> ExpertGroup() const {
    std::vector<int32_t> out;
    for (int32_t k = 0; k < groups(); ++k) out.insert(out.end(), experts_per_group[k], k);
    return out;
  }
  std::string Name() const {
    std::string s = "groups{";
    for (int32_t e : experts_per_group) s += std::to_string(e) + ",";
    return s + "} empty=" + std::to_string(empty);
  }
};

std::vector<Layout> Layouts() {
  return {{{1}, 0}, {{2, 1}, 1}, {{3, 1, 2}, 2}, {{2, 2, 2}, 1}, {{1, 3, 1, 2}, 2}};
}

// Softmax rows of N(0, 0.7^2) logits: positive, summing to one.
std::vector<double> SoftmaxRows(std::mt19937& rng, int64_t rows, int64_t slots) {
  std::normal_distribution<double> normal(0.0, 0.7);
  std::vector<double> g(rows * slots);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t s = 0; s < slots; ++s) sum += g[r * slots + s] = std::exp(normal(rng));
    for (int64_t s = 0; s < slots; ++s) g[r * slots + s] /= sum;
  }
  return g;
}

// Labels in [0, groups) with every fourth row unlabelled.
std::vector<int32_t> Labels(std::mt19937& rng, int64_t rows, int64_t groups) {
  std::vector<int32_t> labels = UniformInts(rng, rows, 0, static_cast<int32_t>(groups - 1));
  for (int64_t r = 3; r < rows; r += 4) labels[r] = -1;
  return labels;
}

long double Floored(long double x) { return x < 1e-30L ? 1e-30L : x; }

// The literal group soft cross-entropy of one row.
double ReferenceCe(const Layout& l, const double* g, int32_t label, double eps) {
  long double empty = 0;
  for (int64_t s = l.experts(); s < l.slots(); ++s) empty += g[s];
  const long double denom = Floored(1.0L - empty);
  long double ce = 0;
  for (int64_t k = 0, e = 0; k < l.groups(); ++k) {
    long double mass = 0;
    for (int32_t i = 0; i < l.experts_per_group[k]; ++i) mass += g[e++];
    const long double y = (k == label ? 1.0L - eps : 0.0L) + static_cast<long double>(eps) / l.groups();
    if (y != 0) ce -= y * std::log(Floored(mass) / denom);
  }
  return static_cast<double>(ce);
}

// The balance loss of one router's slot mass.
double ReferenceBalance(const Layout& l, const double* mass) {
  long double total = 0;
  for (int64_t k = 0, e = 0; k < l.groups(); e += l.experts_per_group[k], ++k) {
    const int32_t n = l.experts_per_group[k];
    if (n < 2) continue;
    long double mu = 0;
    for (int32_t i = 0; i < n; ++i) mu += mass[e + i];
    mu /= n;
    if (mu == 0) continue;
    long double var = 0;
    for (int32_t i = 0; i < n; ++i) var += (mass[e + i] - mu) * (mass[e + i] - mu);
    total += var / n / (mu * mu);
  }
  return static_cast<double>(total / l.groups());
}

struct GroupOut {
  std::vector<double> ce, dprobs;
};

template <typename T>
GroupOut RunGroupLoss(Backend* be, const Layout& l, const std::vector<double>& g,
                      const std::vector<int32_t>& labels, double eps, double scale,
                      bool with_grad = true) {
  const int64_t rows = static_cast<int64_t>(labels.size());
  const std::vector<int32_t> expert_group = l.ExpertGroup();
  const std::vector<T> gt = Cast<T>(g);
  std::vector<T> ce = Cast<T>(Nans(rows)), dprobs = Cast<T>(Nans(rows * l.slots()));
  be->RouterGroupLoss(DTypeOf<T>(), gt.data(), labels.data(), expert_group.data(), rows,
                      l.slots(), l.experts(), l.groups(), eps, scale, ce.data(),
                      with_grad ? dprobs.data() : nullptr);
  return {ToDouble(ce), with_grad ? ToDouble(dprobs) : std::vector<double>()};
}

struct BalanceOut {
  std::vector<double> loss, dmass;
};

template <typename T>
BalanceOut RunBalanceLoss(Backend* be, const Layout& l, const std::vector<double>& mass,
                          int64_t stride, int64_t count) {
  const std::vector<int32_t> expert_group = l.ExpertGroup();
  const std::vector<T> mt = Cast<T>(mass);
  std::vector<T> loss = Cast<T>(Nans(count)), dmass = Cast<T>(Nans(count * l.slots()));
  be->RouterBalanceLoss(DTypeOf<T>(), mt.data(), stride, expert_group.data(), count, l.slots(),
                        l.experts(), l.groups(), loss.data(), dmass.data());
  return {ToDouble(loss), ToDouble(dmass)};
}

constexpr double kRefTol = 64 * kF64Unit;

TEST(RouterLossesKernelTest, GroupLossMatchesReferenceAndFiniteDifferences) {
  Backend* be = Cpu(1);
  for (const Layout& l : Layouts()) {
    for (double eps : {0.0, 0.1}) {
      const std::string what = l.Name() + " eps=" + std::to_string(eps);
      std::mt19937 rng(static_cast<uint32_t>(l.slots() * 17 + l.groups()));
      const int64_t rows = 9, slots = l.slots();
      std::vector<double> g = SoftmaxRows(rng, rows, slots);
      const std::vector<int32_t> labels = Labels(rng, rows, l.groups());
      const double scale = 0.37;
      const GroupOut out = RunGroupLoss<double>(be, l, g, labels, eps, scale);
      std::vector<double> want(rows), bound(rows);
      for (int64_t r = 0; r < rows; ++r) {
        want[r] = labels[r] < 0 ? 0.0 : ReferenceCe(l, g.data() + r * slots, labels[r], eps);
        bound[r] = kRefTol * (std::abs(want[r]) + 1);
      }
      ExpectWithin(out.ce, want, bound, what + " ce");
      // dprobs / scale against d(sum_r ce_r)/dg: each row's ce reads only its own row.
      std::vector<double> analytic = out.dprobs;
      for (double& d : analytic) d /= scale;
      const std::vector<double> numeric = NumericGradient(&g, std::vector<double>(rows, 1.0), [&] {
        return RunGroupLoss<double>(be, l, g, labels, eps, scale, false).ce;
      });
      ExpectGradientMatches(analytic, numeric, what + " dprobs");
      for (int64_t r = 0; r < rows; ++r) {
        if (labels[r] >= 0) continue;
        for (int64_t s = 0; s < slots; ++s) EXPECT_EQ(out.dprobs[r * slots + s], 0.0) << what;
      }
      // Without dprobs the values are the same.
      ExpectBitwiseEqual(RunGroupLoss<double>(be, l, g, labels, eps, scale, false).ce, out.ce,
                         what + " ce without dprobs");
    }
  }
}

TEST(RouterLossesKernelTest, GroupLossFloorsAnEmptyGroup) {
  // Groups {2, 1} + 1 empty: group 0 has no mass at all; label 1 with eps = 0.1 still
  // gives group 0 a target of 0.05, so its log reads the 1e-30 floor.
  const Layout l{{2, 1}, 1};
  const std::vector<double> g = {0.0, 0.0, 0.75, 0.25};
  const GroupOut out = RunGroupLoss<double>(Cpu(1), l, g, {1}, 0.1, 1.0);
  const double want = ReferenceCe(l, g.data(), 1, 0.1);
  EXPECT_TRUE(std::isfinite(out.ce[0]));
  EXPECT_NEAR(out.ce[0], want, kRefTol * (std::abs(want) + 1));
  EXPECT_NEAR(out.dprobs[0], -0.05 / 1e-30, 1e-15 * 0.05 / 1e-30);  // -y_0 / floor
}

TEST(RouterLossesKernelTest, BalanceLossMatchesReferenceAndFiniteDifferences) {
  Backend* be = Cpu(1);
  for (const Layout& l : Layouts()) {
    const std::string what = l.Name();
    std::mt19937 rng(static_cast<uint32_t>(l.slots() * 5 + 1));
    const int64_t count = 4, slots = l.slots(), stride = slots + 3;
    // Row c of mass: c's weighted slot sums over ~50 positions; NaN padding between rows.
    std::vector<double> mass = Nans(count * stride);
    for (int64_t c = 0; c < count; ++c) {
      const std::vector<double> m = Uniform(rng, slots, 5.0, 50.0);
      for (int64_t s = 0; s < slots; ++s) mass[c * stride + s] = m[s];
    }
    const BalanceOut out = RunBalanceLoss<double>(be, l, mass, stride, count);
    std::vector<double> want(count), bound(count);
    for (int64_t c = 0; c < count; ++c) {
      want[c] = ReferenceBalance(l, mass.data() + c * stride);
      bound[c] = kRefTol * (std::abs(want[c]) + 1);
    }
    ExpectWithin(out.loss, want, bound, what + " loss");
    const std::vector<double> numeric = NumericGradient(&mass, std::vector<double>(count, 1.0), [&] {
      return RunBalanceLoss<double>(be, l, mass, stride, count).loss;
    });
    std::vector<double> analytic, expected;
    for (int64_t c = 0; c < count; ++c) {
      for (int64_t s = 0; s < slots; ++s) {
        analytic.push_back(out.dmass[c * slots + s]);
        expected.push_back(numeric[c * stride + s]);
      }
    }
    ExpectGradientMatches(analytic, expected, what + " dmass");
  }
  // A group whose mass is all zero contributes nothing (mu = 0), as does a 1-expert group.
  const Layout l{{2, 1}, 1};
  const BalanceOut zero = RunBalanceLoss<double>(be, l, {0.0, 0.0, 3.0, 1.0}, 4, 1);
  EXPECT_EQ(zero.loss[0], 0.0);
  for (double d : zero.dmass) EXPECT_EQ(d, 0.0);
}

TEST(RouterLossesKernelTest, F32MatchesF64) {
  Backend* be = Cpu(1);
  for (const Layout& l : Layouts()) {
    const std::string what = l.Name();
    std::mt19937 rng(static_cast<uint32_t>(l.slots() * 3 + 7));
    const int64_t rows = 40, slots = l.slots();
    const std::vector<double> g = RoundToF32(SoftmaxRows(rng, rows, slots));
    const std::vector<int32_t> labels = Labels(rng, rows, l.groups());
    const GroupOut f64 = RunGroupLoss<double>(be, l, g, labels, 0.1, 0.5);
    const GroupOut f32 = RunGroupLoss<float>(be, l, g, labels, 0.1, 0.5);
    auto bound = [](const std::vector<double>& v) {
      std::vector<double> b(v.size());
      for (size_t i = 0; i < v.size(); ++i) b[i] = 2 * kF32Unit * std::abs(v[i]);
      return b;
    };
    ExpectWithin(f32.ce, f64.ce, bound(f64.ce), what + " ce");
    ExpectWithin(f32.dprobs, f64.dprobs, bound(f64.dprobs), what + " dprobs");
    const std::vector<double> mass = RoundToF32(Uniform(rng, 3 * slots, 5.0, 50.0));
    const BalanceOut b64 = RunBalanceLoss<double>(be, l, mass, slots, 3);
    const BalanceOut b32 = RunBalanceLoss<float>(be, l, mass, slots, 3);
    ExpectWithin(b32.loss, b64.loss, bound(b64.loss), what + " balance loss");
    ExpectWithin(b32.dmass, b64.dmass, bound(b64.dmass), what + " dmass");
  }
}

TEST(RouterLossesKernelTest, ThreadCountDoesNotChangeBits) {
  // 6000 rows x 7 slots is enough work for the CPU backend to split over threads.
  const Layout l{{2, 2, 2}, 1};
  std::mt19937 rng(5);
  const int64_t rows = 6000;
  const std::vector<double> g = SoftmaxRows(rng, rows, l.slots());
  const std::vector<int32_t> labels = Labels(rng, rows, l.groups());
  const GroupOut one = RunGroupLoss<double>(Cpu(1), l, g, labels, 0.1, 0.5);
  const GroupOut two = RunGroupLoss<double>(Cpu(2), l, g, labels, 0.1, 0.5);
  ExpectBitwiseEqual(one.ce, two.ce, "ce");
  ExpectBitwiseEqual(one.dprobs, two.dprobs, "dprobs");
  const std::vector<double> mass = Uniform(rng, 3000 * l.slots(), 5.0, 50.0);
  const BalanceOut b1 = RunBalanceLoss<double>(Cpu(1), l, mass, l.slots(), 3000);
  const BalanceOut b2 = RunBalanceLoss<double>(Cpu(2), l, mass, l.slots(), 3000);
  ExpectBitwiseEqual(b1.loss, b2.loss, "balance loss");
  ExpectBitwiseEqual(b1.dmass, b2.dmass, "dmass");
}

}  // namespace
}  // namespace pmol::testing
