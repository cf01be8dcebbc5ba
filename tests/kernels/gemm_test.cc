// Backend::Gemm (and GemmBias, the same plus a bias row) against a naive triple loop
// accumulated in long double, for all four transpose combinations, with leading dimensions larger than the minimum, non-trivial
// alpha/beta, and odd sizes. Padding columns of C (between n and ldc) must be untouched.
//
// Tolerances: a k-term dot product in any summation order (BLAS blocks and uses FMA)
// obeys |fl(c) - c| <= gamma_{k+2} (|alpha| sum_p |a_ip b_pj| + |beta| |c_ij|) with
// gamma_n ~ n*u (Higham, Accuracy and Stability, 3.1); +2 covers the alpha and beta
// products. We use (k + 3) * u * magnitude per element, with u = 2^-53 for the f64
// kernel against the long-double reference (whose own error is 2^-11 times smaller) and
// u = 2^-24 for the f32 kernel against the f64 kernel on identical f32-rounded inputs.
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

struct GemmCase {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  double alpha = 1.0, beta = 0.0;
  std::vector<double> a, b, c;  // c: C's initial value, m rows of ldc

  // Makes a case with leading dimensions `pad` larger than the minimum.
  static GemmCase Make(std::mt19937& rng, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       int64_t pad, double alpha, double beta) {
    GemmCase g;
    g.trans_a = ta;
    g.trans_b = tb;
    g.m = m;
    g.n = n;
    g.k = k;
    g.lda = (ta ? m : k) + pad;
    g.ldb = (tb ? k : n) + pad;
    g.ldc = n + pad;
    g.alpha = alpha;
    g.beta = beta;
    g.a = Uniform(rng, (ta ? k : m) * g.lda);
    g.b = Uniform(rng, (tb ? n : k) * g.ldb);
    g.c = Uniform(rng, m * g.ldc);
    return g;
  }
  double A(int64_t i, int64_t p) const { return trans_a ? a[p * lda + i] : a[i * lda + p]; }
  double B(int64_t p, int64_t j) const { return trans_b ? b[j * ldb + p] : b[p * ldb + j]; }
};

// Reference C (padding copied from the input) and the per-element error magnitude
// |alpha| sum_p |A B| + |beta| |C| (zero on padding, which must match exactly).
void Reference(const GemmCase& g, std::vector<double>* c, std::vector<double>* magnitude) {
  *c = g.c;
  magnitude->assign(g.c.size(), 0.0);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      long double acc = 0, mag = 0;
      for (int64_t p = 0; p < g.k; ++p) {
        acc += static_cast<long double>(g.A(i, p)) * g.B(p, j);
        mag += std::abs(static_cast<long double>(g.A(i, p)) * g.B(p, j));
      }
      const double c0 = g.c[i * g.ldc + j];
      // beta == 0: C is not read (BLAS convention), so NaN there does not propagate.
      const long double scaled_c = g.beta == 0 ? 0.0L : static_cast<long double>(g.beta) * c0;
      (*c)[i * g.ldc + j] = static_cast<double>(g.alpha * acc + scaled_c);
      (*magnitude)[i * g.ldc + j] =
          static_cast<double>(std::abs(g.alpha) * mag + std::abs(scaled_c));
    }
  }
}

template <typename T>
std::vector<double> RunGemm(const GemmCase& g) {
  std::vector<T> a = Cast<T>(g.a), b = Cast<T>(g.b), c = Cast<T>(g.c);
  Cpu(2)->Gemm(DTypeOf<T>(), g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, a.data(), g.lda,
               b.data(), g.ldb, g.beta, c.data(), g.ldc);
  return ToDouble(c);
}

std::vector<double> Bound(const std::vector<double>& magnitude, int64_t k, double unit) {
  std::vector<double> bound(magnitude.size());
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = (k + 3) * unit * magnitude[i];
  return bound;
}

class GemmTransposeTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(GemmTransposeTest, F64MatchesTripleLoop) {
  const auto [ta, tb] = GetParam();
  std::mt19937 rng(1234 + 2 * ta + tb);
  const GemmCase g = GemmCase::Make(rng, ta, tb, /*m=*/13, /*n=*/11, /*k=*/37, /*pad=*/5,
                                    /*alpha=*/0.7, /*beta=*/-1.3);
  std::vector<double> expected, magnitude;
  Reference(g, &expected, &magnitude);
  ExpectWithin(RunGemm<double>(g), expected, Bound(magnitude, g.k, kF64Unit), "C");
}

TEST_P(GemmTransposeTest, F32AgreesWithF64) {
  const auto [ta, tb] = GetParam();
  std::mt19937 rng(99 + 2 * ta + tb);
  GemmCase g = GemmCase::Make(rng, ta, tb, /*m=*/29, /*n=*/31, /*k=*/257, /*pad=*/3,
                              /*alpha=*/-0.45, /*beta=*/0.8);
  g.a = RoundToF32(g.a);
  g.b = RoundToF32(g.b);
  g.c = RoundToF32(g.c);
  g.alpha = static_cast<float>(g.alpha);
  g.beta = static_cast<float>(g.beta);
  std::vector<double> unused, magnitude;
  Reference(g, &unused, &magnitude);
  ExpectWithin(RunGemm<float>(g), RunGemm<double>(g),
               Bound(magnitude, g.k, kF32Unit + kF64Unit), "C");
}

TEST_P(GemmTransposeTest, BetaZeroIgnoresGarbageInC) {
  // Callers hand freshly allocated (uninitialised) outputs with beta = 0.
  const auto [ta, tb] = GetParam();
  std::mt19937 rng(7 + 2 * ta + tb);
  GemmCase g = GemmCase::Make(rng, ta, tb, 9, 15, 21, 2, 1.0, 0.0);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) g.c[i * g.ldc + j] = std::numeric_limits<double>::quiet_NaN();
  }
  std::vector<double> expected, magnitude;
  Reference(g, &expected, &magnitude);
  ExpectWithin(RunGemm<double>(g), expected, Bound(magnitude, g.k, kF64Unit), "C");
}

TEST_P(GemmTransposeTest, BiasF64MatchesTripleLoopPlusBias) {
  // GemmBias: C = op(A) op(B) + bias, C packed and uninitialised (NaN) on entry.
  const auto [ta, tb] = GetParam();
  std::mt19937 rng(31 + 2 * ta + tb);
  GemmCase g = GemmCase::Make(rng, ta, tb, /*m=*/12, /*n=*/17, /*k=*/33, /*pad=*/4, 1.0, 0.0);
  g.ldc = g.n;
  g.c.assign(g.m * g.n, std::numeric_limits<double>::quiet_NaN());
  const std::vector<double> bias = Uniform(rng, g.n, -3.0, 3.0);
  std::vector<double> expected, magnitude;
  Reference(g, &expected, &magnitude);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      expected[i * g.n + j] += bias[j];
      magnitude[i * g.n + j] += std::abs(bias[j]);
    }
  }
  std::vector<double> c = g.c;
  Cpu(2)->GemmBias(DType::kF64, ta, tb, g.m, g.n, g.k, g.a.data(), g.lda, g.b.data(), g.ldb,
                   bias.data(), c.data());
  ExpectWithin(c, expected, Bound(magnitude, g.k, kF64Unit), "C");
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, GemmTransposeTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "At" : "A") +
                                  (std::get<1>(info.param) ? "Bt" : "B");
                         });

TEST(GemmTest, EmptyInnerDimensionScalesC) {
  // k = 0: op(A) op(B) is the zero matrix, so C = beta * C.
  std::mt19937 rng(5);
  GemmCase g = GemmCase::Make(rng, false, false, 7, 5, 0, 1, 2.0, -0.5);
  std::vector<double> expected, magnitude;
  Reference(g, &expected, &magnitude);
  ExpectWithin(RunGemm<double>(g), expected, Bound(magnitude, g.k, kF64Unit), "C");
}

TEST(GemmTest, SingleThreadMatchesReference) {
  // The multithreaded BLAS path above and the single-threaded one must both be right.
  std::mt19937 rng(77);
  const GemmCase g = GemmCase::Make(rng, true, false, 67, 45, 129, 4, 1.5, 0.25);
  std::vector<double> expected, magnitude;
  Reference(g, &expected, &magnitude);
  std::vector<double> a = g.a, b = g.b, c = g.c;
  Cpu(1)->Gemm(DType::kF64, g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, a.data(), g.lda,
               b.data(), g.ldb, g.beta, c.data(), g.ldc);
  ExpectWithin(c, expected, Bound(magnitude, g.k, kF64Unit), "C");
}

}  // namespace
}  // namespace pmol::testing
