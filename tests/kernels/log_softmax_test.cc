// Backend::LogSoftmaxGather/LogSoftmaxGatherBackward against: a long-double reference
// lse = m + log sum_v exp(x_v - m), logp = x_t - lse (0 for targets < 0), including rows
// whose logits sit near +-1e5 (f64) and +-1e4 (f32) with spreads of hundreds, where a
// sum of plain exp() would overflow; central finite differences in f64 of
// L = sum_r w_r logp_r (and exactly zero gradient on ignored rows); and f64 for f32.
//
// Tolerances: with R = max_v |x_v - m| and V the vocabulary, each term exp(x_v - m)
// carries (R + 2) u relative error (argument rounding, exp), the V-term sum adds
// V u_sum (the kernel sums in double: u_sum = 2^-53 for both types), so
//   lse:  V u_sum + (R + |lse| + 4) u,       logp: lse bound + (|x_t| + |logp|) u,
//   dlogits_v = g (onehot - p_v): |g| p_v (lse bound + (|x_v - lse| + 3) u) + u |dlogits_v|,
// u = 2^-53 for f64 vs the reference and 2^-24 + 2^-53 for f32 vs f64, doubled for the
// second-order terms. Probabilities below the type's normal range (e^-708 in f64, e^-87 in
// f32) have no relative accuracy (they flush to subnormals or zero), so dlogits also gets
// an absolute |g| * DBL_MIN (f64) or |g| * FLT_MIN (f32).
// Finite differences: see kernel_test_util.h (1e-7 * (1 + |g|)).
#include <algorithm>
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

struct LsCase {
  int64_t rows = 0, vocab = 0;
  std::vector<double> logits, dlogp;
  std::vector<int32_t> targets;

  // Rows of logits uniform in +-spread around a per-row offset of +-offset; some targets are
  // ignored (-1, -100), others are the first and the last class.
  static LsCase Make(uint32_t seed, int64_t rows, int64_t vocab, double spread = 3.0,
                     double offset = 0.0) {
    std::mt19937 rng(seed);
    LsCase c;
    c.rows = rows;
    c.vocab = vocab;
    c.logits = Uniform(rng, rows * vocab, -spread, spread);
    for (int64_t r = 0; r < rows; ++r) {
      const double shift = (r % 2 == 0 ? offset : -offset);
      for (int64_t v = 0; v < vocab; ++v) c.logits[r * vocab + v] += shift;
    }
    c.targets = UniformInts(rng, rows, 0, static_cast<int32_t>(vocab - 1));
    c.targets[0] = 0;
    if (rows > 1) c.targets[1] = -1;
    if (rows > 2) c.targets[2] = static_cast<int32_t>(vocab - 1);
    if (rows > 4) c.targets[4] = -100;
    c.dlogp = Uniform(rng, rows);
    return c;
  }
  LsCase RoundedToF32() const {
    LsCase c = *this;
    c.logits = RoundToF32(logits);
    c.dlogp = RoundToF32(dlogp);
    return c;
  }
};

struct LsResult {
  std::vector<double> logp, lse, dlogits;
};

template <typename T>
LsResult RunLogSoftmax(const LsCase& c, bool backward = true) {
  Backend* be = Cpu(2);
  std::vector<T> x = Cast<T>(c.logits), dlogp = Cast<T>(c.dlogp);
  std::vector<T> logp = Cast<T>(Nans(c.rows)), lse = Cast<T>(Nans(c.rows));
  be->LogSoftmaxGather(DTypeOf<T>(), x.data(), c.targets.data(), c.rows, c.vocab, logp.data(),
                       lse.data());
  LsResult r{ToDouble(logp), ToDouble(lse), {}};
  if (!backward) return r;
  std::vector<T> dx = Cast<T>(Nans(x.size()));  // documented as overwritten
  be->LogSoftmaxGatherBackward(DTypeOf<T>(), x.data(), c.targets.data(), lse.data(),
                               dlogp.data(), c.rows, c.vocab, dx.data());
  r.dlogits = ToDouble(dx);
  return r;
}

// Reference values, and bounds for unit roundoff u and the smallest normal number `tiny`
// of the kernel's type (see the file comment).
void Reference(const LsCase& c, double u, double tiny, LsResult* ref, LsResult* bound) {
  const int64_t V = c.vocab;
  *ref = {std::vector<double>(c.rows), std::vector<double>(c.rows),
          std::vector<double>(c.rows * V)};
  *bound = *ref;
  for (int64_t r = 0; r < c.rows; ++r) {
    const double* x = &c.logits[r * V];
    const long double m = *std::max_element(x, x + V);
    long double z = 0, spread = 0;
    for (int64_t v = 0; v < V; ++v) {
      z += std::exp(x[v] - m);
      spread = std::max(spread, m - x[v]);
    }
    const long double lse = m + std::log(z);
    const long double lse_err = 2 * (V * kF64Unit + (spread + std::abs(lse) + 4) * u);
    const int32_t t = c.targets[r];
    const long double logp = t < 0 ? 0.0L : x[t] - lse;
    ref->lse[r] = static_cast<double>(lse);
    ref->logp[r] = static_cast<double>(logp);
    bound->lse[r] = static_cast<double>(lse_err);
    bound->logp[r] =
        t < 0 ? 0.0 : static_cast<double>(lse_err + 2 * (std::abs(x[t]) + std::abs(logp)) * u);
    for (int64_t v = 0; v < V; ++v) {
      if (t < 0) continue;  // exactly zero
      const long double p = std::exp(x[v] - lse);
      const long double d = c.dlogp[r] * ((v == t ? 1.0L : 0.0L) - p);
      ref->dlogits[r * V + v] = static_cast<double>(d);
      bound->dlogits[r * V + v] = static_cast<double>(
          std::abs(c.dlogp[r]) * p * (lse_err + 2 * (std::abs(x[v] - lse) + 3) * u) +
          2 * u * std::abs(d) + std::abs(c.dlogp[r]) * tiny);
    }
  }
}

TEST(LogSoftmaxTest, F64MatchesReference) {
  const LsCase c = LsCase::Make(71, 13, 1001);
  LsResult ref, bound;
  Reference(c, kF64Unit, DBL_MIN, &ref, &bound);
  const LsResult got = RunLogSoftmax<double>(c);
  ExpectWithin(got.logp, ref.logp, bound.logp, "logp");
  ExpectWithin(got.lse, ref.lse, bound.lse, "lse");
  ExpectWithin(got.dlogits, ref.dlogits, bound.dlogits, "dlogits");
}

TEST(LogSoftmaxTest, IgnoredTargetsGiveZeroLogpAndGradient) {
  const LsCase c = LsCase::Make(72, 7, 1001);
  ASSERT_LT(c.targets[1], 0);
  ASSERT_LT(c.targets[4], 0);
  const LsResult got = RunLogSoftmax<double>(c);
  for (int64_t r : {1, 4}) {
    EXPECT_EQ(got.logp[r], 0.0) << r;
    for (int64_t v = 0; v < c.vocab; ++v) ASSERT_EQ(got.dlogits[r * c.vocab + v], 0.0) << r;
  }
}

TEST(LogSoftmaxTest, LargeMagnitudeLogitsAreStable) {
  // f64: rows at +-1e5 with a spread of +-400 (exp(800) overflows f64).
  const LsCase c64 = LsCase::Make(73, 13, 1001, /*spread=*/400.0, /*offset=*/1e5);
  LsResult ref, bound;
  Reference(c64, kF64Unit, DBL_MIN, &ref, &bound);
  const LsResult got64 = RunLogSoftmax<double>(c64);
  ExpectWithin(got64.logp, ref.logp, bound.logp, "f64 logp");
  ExpectWithin(got64.lse, ref.lse, bound.lse, "f64 lse");
  ExpectWithin(got64.dlogits, ref.dlogits, bound.dlogits, "f64 dlogits");

  // f32: rows at +-1e4 with a spread of +-60 (exp(120) overflows f32).
  const LsCase c32 = LsCase::Make(74, 13, 1001, /*spread=*/60.0, /*offset=*/1e4).RoundedToF32();
  Reference(c32, kF32Unit + kF64Unit, FLT_MIN, &ref, &bound);
  const LsResult got32 = RunLogSoftmax<float>(c32);
  ExpectWithin(got32.logp, ref.logp, bound.logp, "f32 logp");
  ExpectWithin(got32.lse, ref.lse, bound.lse, "f32 lse");
  ExpectWithin(got32.dlogits, ref.dlogits, bound.dlogits, "f32 dlogits");
}

TEST(LogSoftmaxTest, BackwardMatchesFiniteDifferences) {
  LsCase c = LsCase::Make(75, 5, 1001);
  const LsResult analytic = RunLogSoftmax<double>(c);  // c.dlogp plays the role of dL/dlogp
  const std::vector<double> numeric = NumericGradient(
      &c.logits, c.dlogp, [&]() { return RunLogSoftmax<double>(c, /*backward=*/false).logp; });
  ExpectGradientMatches(analytic.dlogits, numeric, "dlogits");
}

TEST(LogSoftmaxTest, F32AgreesWithF64) {
  const LsCase c = LsCase::Make(76, 13, 1001, /*spread=*/8.0).RoundedToF32();
  LsResult unused, bound;
  Reference(c, kF32Unit + kF64Unit, FLT_MIN, &unused, &bound);
  const LsResult f32 = RunLogSoftmax<float>(c), f64 = RunLogSoftmax<double>(c);
  ExpectWithin(f32.logp, f64.logp, bound.logp, "logp");
  ExpectWithin(f32.lse, f64.lse, bound.lse, "lse");
  ExpectWithin(f32.dlogits, f64.dlogits, bound.dlogits, "dlogits");
}

}  // namespace
}  // namespace pmol::testing

namespace pmol {
namespace {

// f32 rows with a NaN or +inf logit (in the vectorised body or in the tail) give NaN
// log-probs and gradients, so a diverged model shows up as a non-finite loss; rows with
// -inf logits are finite (those terms are exactly 0).
TEST(LogSoftmaxTest, F32NonFiniteLogitsPropagate) {
  Backend* be = GetBackend(DeviceType::kCpu, 2).value();
  const int64_t rows = 5, vocab = 19;  // two 8-wide blocks and a tail of 3
  std::vector<float> x(rows * vocab);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.1f * static_cast<float>(i % 7) - 0.3f;
  x[0 * vocab + 4] = NAN;       // in a vector block
  x[1 * vocab + 17] = NAN;      // in the tail
  x[2 * vocab + 9] = INFINITY;  // +inf
  x[3 * vocab + 2] = -INFINITY;  // -inf: a zero term
  const std::vector<int32_t> targets = {0, 0, 0, 0, 1};
  std::vector<float> logp(rows), lse(rows), dlogp(rows, 1.0f), dx(rows * vocab);
  be->LogSoftmaxGather(DType::kF32, x.data(), targets.data(), rows, vocab, logp.data(), lse.data());
  be->LogSoftmaxGatherBackward(DType::kF32, x.data(), targets.data(), lse.data(), dlogp.data(), rows,
                               vocab, dx.data());
  for (int64_t r : {0, 1, 2}) {
    EXPECT_TRUE(std::isnan(logp[r])) << r;
    EXPECT_TRUE(std::isnan(dx[r * vocab + 5])) << r;
  }
  for (int64_t r : {3, 4}) {
    EXPECT_TRUE(std::isfinite(logp[r])) << r;
    EXPECT_TRUE(std::isfinite(lse[r])) << r;
  }
  EXPECT_EQ(dx[3 * vocab + 2], 0.0f);
}

}  // namespace
}  // namespace pmol
