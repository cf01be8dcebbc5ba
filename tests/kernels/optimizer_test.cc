// Backend::AdamWStep and Backend::SumSquares (CPU) against long-double references written
// here.
//
// AdamWStep, per element, with u the unit roundoff of T and the scalars exact in the
// reference (the kernel rounds beta1, 1-beta1, ... to T: one rounding each):
//   m' = b1 m + (1-b1) g: <= 4 roundings of the terms, |err| <= 4u (|b1 m| + |(1-b1) g|);
//   v' (non-negative terms): |err| <= 5u (b2 v + (1-b2) g^2);
//   p' = p(1 - lr wd) - (lr/bc1) m'/(sqrt(v')/sqrt(bc2) + eps): the decayed p carries
//     <= 3u |p|; the update U = (lr/bc1) m'/d carries the absolute error of m' (4u M,
//     M = |b1 m| + |(1-b1) g|) plus ~8u relative from d (sqrt, two divisions, an add of
//     positive terms) and the final multiply-add, so |err| <= 4u |p| + 16u (lr/bc1) M / d.
// A wrong bias correction, a missing eps or decay changes p' by >= 1e-4 relative here,
// far outside these bounds (u = 6e-8 in f32, 1.1e-16 in f64). Elements past n are left
// alone (sentinels).
//
// SumSquares: the squares and sums are in f64 whatever T, so against the long-double sum
// S of x^2 the error is <= (n + 1) u64 S (+ u64 |acc| for the accumulated start value);
// and bitwise independent of the thread count (fixed chunks).
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

constexpr double kSentinel = 12345.0;

template <typename T>
class OptimizerKernelTest : public ::testing::Test {};
using ComputeTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(OptimizerKernelTest, ComputeTypes);

TYPED_TEST(OptimizerKernelTest, AdamWStepMatchesLongDoubleReference) {
  using T = TypeParam;
  const double u = std::is_same_v<T, float> ? kF32Unit : kF64Unit;
  const int64_t n = 1001;
  std::mt19937 rng(51);
  std::vector<double> p0 = Uniform(rng, n), g0 = Uniform(rng, n), m0 = Uniform(rng, n, -0.5, 0.5),
                      v0 = Uniform(rng, n, 0.0, 1.0);
  // Some tiny gradients and second moments, so eps dominates the denominator there.
  for (int64_t i = 0; i < n; i += 7) {
    g0[i] *= 1e-9;
    m0[i] *= 1e-9;
    v0[i] *= 1e-18;
  }
  for (const auto& [t, wd, beta1, beta2, eps] :
       std::vector<std::tuple<int, double, double, double, double>>{
           {1, 0.1, 0.9, 0.999, 1e-8}, {7, 0.0, 0.9, 0.999, 1e-8}, {300, 0.3, 0.8, 0.95, 1e-6}}) {
    AdamWScalars s;
    s.lr = 1e-2;
    s.beta1 = beta1;
    s.beta2 = beta2;
    s.eps = eps;
    s.weight_decay = wd;
    s.bias_correction1 = 1.0 - std::pow(beta1, t);
    s.bias_correction2 = 1.0 - std::pow(beta2, t);
    std::vector<T> p = Cast<T>(p0), g = Cast<T>(g0), m = Cast<T>(m0), v = Cast<T>(v0);
    p.push_back(static_cast<T>(kSentinel));
    m.push_back(static_cast<T>(kSentinel));
    v.push_back(static_cast<T>(kSentinel));
    Cpu(2)->AdamWStep(DTypeOf<T>(), s, p.data(), g.data(), m.data(), v.data(), n);
    EXPECT_EQ(p[n], static_cast<T>(kSentinel));
    EXPECT_EQ(m[n], static_cast<T>(kSentinel));
    EXPECT_EQ(v[n], static_cast<T>(kSentinel));
    std::vector<double> want_p(n), want_m(n), want_v(n), bound_p(n), bound_m(n), bound_v(n);
    for (int64_t i = 0; i < n; ++i) {
      using L = long double;
      const L pi = static_cast<T>(p0[i]), gi = static_cast<T>(g0[i]);
      const L mi = static_cast<T>(m0[i]), vi = static_cast<T>(v0[i]);
      const L b1 = beta1, b2 = beta2;
      const L m1 = b1 * mi + (1 - b1) * gi;
      const L v1 = b2 * vi + (1 - b2) * gi * gi;
      // The bias corrections are inputs (formed by the caller); use the same values.
      const L step_size = static_cast<L>(s.lr) / static_cast<L>(s.bias_correction1);
      const L d = std::sqrt(v1) / std::sqrt(static_cast<L>(s.bias_correction2)) + eps;
      const L decayed = pi * (1 - static_cast<L>(s.lr) * wd);
      want_m[i] = static_cast<double>(m1);
      want_v[i] = static_cast<double>(v1);
      want_p[i] = static_cast<double>(decayed - step_size * m1 / d);
      const L big_m = std::fabs(b1 * mi) + std::fabs((1 - b1) * gi);
      bound_m[i] = static_cast<double>(4 * u * big_m);
      bound_v[i] = static_cast<double>(5 * u * (b2 * vi + (1 - b2) * gi * gi));
      bound_p[i] = static_cast<double>(4 * u * std::fabs(pi) + 16 * u * step_size * big_m / d);
    }
    p.pop_back();
    m.pop_back();
    v.pop_back();
    const std::string tag = " t=" + std::to_string(t);
    ExpectWithin(ToDouble(m), want_m, bound_m, "m" + tag);
    ExpectWithin(ToDouble(v), want_v, bound_v, "v" + tag);
    ExpectWithin(ToDouble(p), want_p, bound_p, "p" + tag);
  }
}

TYPED_TEST(OptimizerKernelTest, AdamWStepOfNothingIsANoOp) {
  using T = TypeParam;
  T p = 1, g = 1, m = 1, v = 1;
  Cpu(2)->AdamWStep(DTypeOf<T>(), AdamWScalars{}, &p, &g, &m, &v, 0);
  EXPECT_EQ(p, T(1));
  EXPECT_EQ(m, T(1));
  EXPECT_EQ(v, T(1));
}

template <typename T>
double SumSquaresOf(const std::vector<double>& x, double start, int threads) {
  const std::vector<T> xt = Cast<T>(x);
  double acc = start;
  Cpu(threads)->SumSquares(DTypeOf<T>(), xt.data(), static_cast<int64_t>(xt.size()), &acc);
  return acc;
}

TYPED_TEST(OptimizerKernelTest, SumSquaresMatchesLongDoubleAndAccumulates) {
  using T = TypeParam;
  std::mt19937 rng(52);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1001}, int64_t{3 * 16384 + 5}}) {
    const std::vector<double> x = Uniform(rng, n, -2.0, 2.0);
    long double sum = 0;
    for (double xi : x) sum += static_cast<long double>(static_cast<T>(xi)) * static_cast<T>(xi);
    const double start = 0.5;
    const double want = static_cast<double>(start + sum);
    const double bound = kF64Unit * static_cast<double>((n + 1) * sum + start);
    ExpectWithin({SumSquaresOf<T>(x, start, 2)}, {want}, {bound},
                 "SumSquares n=" + std::to_string(n));
  }
}

TYPED_TEST(OptimizerKernelTest, SumSquaresIsIndependentOfTheThreadCount) {
  using T = TypeParam;
  std::mt19937 rng(53);
  const std::vector<double> x = Uniform(rng, 200003);
  const double one = SumSquaresOf<T>(x, 0.0, 1);
  ExpectBitwiseEqual<double>({SumSquaresOf<T>(x, 0.0, 2)}, {one}, "2 threads");
  ExpectBitwiseEqual<double>({SumSquaresOf<T>(x, 0.0, 3)}, {one}, "3 threads");
}

}  // namespace
}  // namespace pmol::testing
