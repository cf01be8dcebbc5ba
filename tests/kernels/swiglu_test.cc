// Backend::SwiGluForward/SwiGluBackward against: a long-double reference of
// out = g * sigmoid(g) * up and of its derivatives d/dg = up * s (1 + g (1 - s)),
// d/dup = silu(g) (including gates far enough out that exp(-g) overflows); central
// finite differences in f64 of L = sum(w * out); and the f64 kernel for f32.
//
// Tolerances (u = unit roundoff). The f32 kernel takes s from e = exp(-|g|) by the AVX2
// exp (relative error <= 4u, exp_avx2.h) as 1 / (1 + e) or e / (1 + e): 1 + e adds <= 3u
// (e <= 1), the divide u, so s carries <= 8u (the f64 kernel: exp, add, divide, 3u).
// out = g*s*up adds two products: 12u |out| allows for that plus the reference; dup
// likewise 12u |dup|. dgate's factor s (1 + g (1 - s)): 8u from s, g (1 - s) off by
// <= 10u |g| (through 1 - s when s -> 1), the add and three products 4u (1 + |g|):
// 24u |dout up| s (1 + |g|). The f32 run has its tail (n % 8 elements of a thread's
// chunk) on the scalar path, so both paths are measured.
// Results below f32's normal range (|x| < FLT_MIN) carry no relative accuracy (exp(100)
// already overflows f32, giving s = 0 for g = -100 where the true value is 4e-44), so the
// f32 bounds add FLT_MIN. Finite differences: see kernel_test_util.h.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

struct SwiGluResult {
  std::vector<double> out, dgate, dup;
};

template <typename T>
SwiGluResult RunSwiGlu(const std::vector<double>& gate, const std::vector<double>& up,
                       const std::vector<double>& dout) {
  Backend* be = Cpu(2);
  const int64_t n = gate.size();
  std::vector<T> g = Cast<T>(gate), u = Cast<T>(up), d = Cast<T>(dout);
  std::vector<T> out = Cast<T>(Nans(n)), dg = Cast<T>(Nans(n)), du = Cast<T>(Nans(n));
  be->SwiGluForward(DTypeOf<T>(), g.data(), u.data(), out.data(), n);
  be->SwiGluBackward(DTypeOf<T>(), g.data(), u.data(), d.data(), dg.data(), du.data(), n);
  return {ToDouble(out), ToDouble(dg), ToDouble(du)};
}

// Reference values and bounds for unit roundoff u and absolute floor `tiny`.
void Reference(const std::vector<double>& gate, const std::vector<double>& up,
               const std::vector<double>& dout, double u, double tiny, SwiGluResult* ref,
               SwiGluResult* bound) {
  const size_t n = gate.size();
  *ref = {std::vector<double>(n), std::vector<double>(n), std::vector<double>(n)};
  *bound = *ref;
  for (size_t i = 0; i < n; ++i) {
    const long double g = gate[i], s = 1.0L / (1.0L + std::exp(-g));
    const long double out = g * s * up[i];
    const long double dg = dout[i] * up[i] * s * (1.0L + g * (1.0L - s));
    const long double du = dout[i] * g * s;
    ref->out[i] = static_cast<double>(out);
    ref->dgate[i] = static_cast<double>(dg);
    ref->dup[i] = static_cast<double>(du);
    bound->out[i] = static_cast<double>(12 * u * std::abs(out)) + tiny;
    bound->dgate[i] =
        static_cast<double>(24 * u * std::abs(dout[i] * up[i]) * s * (1 + std::abs(g))) + tiny;
    bound->dup[i] = static_cast<double>(12 * u * std::abs(du)) + tiny;
  }
}

// Gates over [-8, 8] plus values where exp(-g) over- or underflows in f32 (|g| = 100) and
// in f64 (|g| = 800), and zero.
std::vector<double> Gates(std::mt19937& rng, int64_t n, bool f64_extremes) {
  std::vector<double> g = Uniform(rng, n, -8.0, 8.0);
  const double extremes[] = {0.0, 30.0, -30.0, 100.0, -100.0, 800.0, -800.0};
  const int count = f64_extremes ? 7 : 5;
  for (int i = 0; i < count; ++i) g[3 * i + 1] = extremes[i];
  return g;
}

TEST(SwiGluTest, F64MatchesReference) {
  std::mt19937 rng(51);
  const int64_t n = 1001;
  const std::vector<double> gate = Gates(rng, n, /*f64_extremes=*/true);
  const std::vector<double> up = Uniform(rng, n, -2.0, 2.0), dout = Uniform(rng, n);
  SwiGluResult ref, bound;
  Reference(gate, up, dout, kF64Unit, 0.0, &ref, &bound);
  const SwiGluResult got = RunSwiGlu<double>(gate, up, dout);
  ExpectWithin(got.out, ref.out, bound.out, "out");
  ExpectWithin(got.dgate, ref.dgate, bound.dgate, "dgate");
  ExpectWithin(got.dup, ref.dup, bound.dup, "dup");
}

TEST(SwiGluTest, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(52);
  const int64_t n = 101;
  std::vector<double> gate = Uniform(rng, n, -6.0, 6.0), up = Uniform(rng, n, -2.0, 2.0);
  const std::vector<double> w = Uniform(rng, n);
  const SwiGluResult analytic = RunSwiGlu<double>(gate, up, w);
  auto forward = [&]() { return RunSwiGlu<double>(gate, up, w).out; };
  ExpectGradientMatches(analytic.dgate, NumericGradient(&gate, w, forward), "dgate");
  ExpectGradientMatches(analytic.dup, NumericGradient(&up, w, forward), "dup");
}

TEST(SwiGluTest, F32AgreesWithF64) {
  std::mt19937 rng(53);
  const int64_t n = 1001;
  const std::vector<double> gate = RoundToF32(Gates(rng, n, /*f64_extremes=*/false));
  const std::vector<double> up = RoundToF32(Uniform(rng, n, -2.0, 2.0));
  const std::vector<double> dout = RoundToF32(Uniform(rng, n));
  SwiGluResult unused, bound;
  Reference(gate, up, dout, kF32Unit + kF64Unit, FLT_MIN, &unused, &bound);
  const SwiGluResult f32 = RunSwiGlu<float>(gate, up, dout);
  const SwiGluResult f64 = RunSwiGlu<double>(gate, up, dout);
  ExpectWithin(f32.out, f64.out, bound.out, "out");
  ExpectWithin(f32.dgate, f64.dgate, bound.dgate, "dgate");
  ExpectWithin(f32.dup, f64.dup, bound.dup, "dup");
}

}  // namespace
}  // namespace pmol::testing
