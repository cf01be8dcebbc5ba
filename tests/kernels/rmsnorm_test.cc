// Backend::RmsNormForward/RmsNormBackward against: a long-double reference of
// y = x * w / sqrt(mean(x^2) + eps); central finite differences in f64 of
// L = sum(g * y) for dx and dw (dw accumulating into a non-zero buffer); the f64 kernel
// for the f32 kernel; and the 1-thread result for 2 and 3 threads (bitwise: the
// implementation promises a thread-independent dw reduction).
// With the residual add fused in (s = x + residual stored to sum_out, y = norm(s); dx =
// norm-backward + residual_grad): s against the test's own f64 sum (bitwise: one correctly
// rounded addition either way) and y, 1/rms against the long-double norm of the exact
// x + residual; finite differences in f64 of L = sum(g * y) + sum(g_skip * s), whose
// gradient with respect to x (and to residual) is the fused dx; bitwise equality with the
// unfused Axpy + op pairs in f32 and f64 (kernels/backend.h promises it: the forward
// normalizes the stored sum, the backward adds the residual gradient to the norm's
// gradient rounded to T, the same two roundings as the Axpy after it); sum_out = x and
// dx = residual_grad in place give the same bits; and thread-count independence.
//
// Tolerances (u = unit roundoff): the f64 forward sums dim squares (relative error
// <= dim*u), halves it through the sqrt and adds a few roundings: (dim + 5)*u*|y|.
// Fused, against the norm of the exact sum: the stored s_i is within u|s_i| of x_i + r_i
// (one rounding), which moves y_i by u and 1/rms by at most u more: (dim + 7)*u*|y| and
// (dim + 7)*u/rms.
// f32 vs f64 on identical f32 inputs, following each rounding of the f32 code path:
//   y  = x*inv*w, inv rounded once from double:             4u |y|
//   dx = inv*w*dy - x*coef, coef = f32(mean(xw dy))*inv^3:  10u (|inv w dy| + |x coef|)
//   dw += sum_r dy*x*inv accumulated in f32 over R rows:    (R + 4)u sum_r |dy x inv| + u|dw|
// Finite differences: see kernel_test_util.h (1e-7 * (1 + |g|)).
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

constexpr double kEps = 1e-5;

struct RmsInputs {
  int64_t rows = 0, dim = 0;
  std::vector<double> x, w, dy;
  std::vector<double> res, dres;  // fused runs: the residual and the skip path's gradient

  static RmsInputs Make(uint32_t seed, int64_t rows, int64_t dim) {
    std::mt19937 rng(seed);
    RmsInputs in;
    in.rows = rows;
    in.dim = dim;
    in.x = Uniform(rng, rows * dim, -2.0, 2.0);
    // Row 1 is tiny, so mean(x^2) ~ 1e-6 is below eps and eps visibly matters.
    for (int64_t c = 0; c < dim; ++c) in.x[dim + c] *= 1e-3;
    in.w = Uniform(rng, dim, 0.5, 1.5);
    in.dy = Uniform(rng, rows * dim);
    in.res = Uniform(rng, rows * dim);
    for (int64_t c = 0; c < dim; ++c) in.res[dim + c] *= 1e-3;  // the sum's row 1 stays tiny
    in.dres = Uniform(rng, rows * dim);
    return in;
  }
  RmsInputs RoundedToF32() const {
    RmsInputs r = *this;
    for (std::vector<double>* v : {&r.x, &r.w, &r.dy, &r.res, &r.dres}) *v = RoundToF32(*v);
    return r;
  }
};

struct RmsOutputs {
  std::vector<double> y, inv_rms, dx, dw;
  std::vector<double> s;  // the stored x + residual (fused runs)
};

// Runs forward then backward in T with dw starting at dw0; fused: with in.res added to x
// in the forward (s stored apart from x) and in.dres added to dx in the backward.
template <typename T>
RmsOutputs RunRmsNorm(const RmsInputs& in, const std::vector<double>& dw0, int threads = 2,
                      bool fused = false) {
  Backend* be = Cpu(threads);
  const int64_t n = in.rows * in.dim;
  std::vector<T> x = Cast<T>(in.x), w = Cast<T>(in.w), dy = Cast<T>(in.dy);
  std::vector<T> res = Cast<T>(in.res), dres = Cast<T>(in.dres), s = Cast<T>(Nans(n));
  std::vector<T> y(n), inv(in.rows), dx = Cast<T>(Nans(n)), dw = Cast<T>(dw0);
  be->RmsNormForward(DTypeOf<T>(), x.data(), fused ? res.data() : nullptr, w.data(), kEps,
                     in.rows, in.dim, fused ? s.data() : nullptr, y.data(), inv.data());
  be->RmsNormBackward(DTypeOf<T>(), fused ? s.data() : x.data(), w.data(), inv.data(),
                      dy.data(), fused ? dres.data() : nullptr, in.rows, in.dim, dx.data(),
                      dw.data());
  return {ToDouble(y), ToDouble(inv), ToDouble(dx), ToDouble(dw), fused ? ToDouble(s)
                                                                        : std::vector<double>()};
}

// The same with the unfused ops: s = x; Axpy(residual into s); the norm of s; its
// backward; Axpy(dres into dx).
template <typename T>
RmsOutputs RunUnfused(const RmsInputs& in, const std::vector<double>& dw0) {
  Backend* be = Cpu(2);
  const DType dt = DTypeOf<T>();
  const int64_t n = in.rows * in.dim;
  std::vector<T> s = Cast<T>(in.x), w = Cast<T>(in.w), dy = Cast<T>(in.dy);
  std::vector<T> res = Cast<T>(in.res), dres = Cast<T>(in.dres);
  std::vector<T> y(n), inv(in.rows), dx = Cast<T>(Nans(n)), dw = Cast<T>(dw0);
  be->Axpy(dt, 1.0, res.data(), s.data(), n);
  be->RmsNormForward(dt, s.data(), nullptr, w.data(), kEps, in.rows, in.dim, nullptr, y.data(),
                     inv.data());
  be->RmsNormBackward(dt, s.data(), w.data(), inv.data(), dy.data(), nullptr, in.rows, in.dim,
                      dx.data(), dw.data());
  be->Axpy(dt, 1.0, dres.data(), dx.data(), n);
  return {ToDouble(y), ToDouble(inv), ToDouble(dx), ToDouble(dw), ToDouble(s)};
}

TEST(RmsNormTest, ForwardMatchesReference) {
  const RmsInputs in = RmsInputs::Make(11, 13, 37);
  const RmsOutputs out = RunRmsNorm<double>(in, std::vector<double>(in.dim, 0.0));
  std::vector<double> y(in.x.size()), y_bound(in.x.size()), inv(in.rows), inv_bound(in.rows);
  const double rel = (in.dim + 5) * kF64Unit;
  for (int64_t r = 0; r < in.rows; ++r) {
    long double ss = 0;
    for (int64_t c = 0; c < in.dim; ++c) {
      ss += static_cast<long double>(in.x[r * in.dim + c]) * in.x[r * in.dim + c];
    }
    const long double inv_r = 1.0L / std::sqrt(ss / in.dim + kEps);
    inv[r] = static_cast<double>(inv_r);
    inv_bound[r] = rel * inv[r];
    for (int64_t c = 0; c < in.dim; ++c) {
      const int64_t i = r * in.dim + c;
      y[i] = static_cast<double>(in.x[i] * inv_r * in.w[c]);
      y_bound[i] = rel * std::abs(y[i]);
    }
  }
  // eps is really added: the tiny row's 1/rms is 1/sqrt(1.3e-6 + 1e-5) ~ 297, not ~870.
  EXPECT_LT(out.inv_rms[1], 330.0);
  ExpectWithin(out.y, y, y_bound, "y");
  ExpectWithin(out.inv_rms, inv, inv_bound, "inv_rms");
}

TEST(RmsNormTest, ForwardWithoutInvRmsGivesSameY) {
  const RmsInputs in = RmsInputs::Make(12, 5, 37);
  std::vector<double> y_with(in.x.size()), y_without(in.x.size()), inv(in.rows);
  Backend* be = Cpu(2);
  be->RmsNormForward(DType::kF64, in.x.data(), nullptr, in.w.data(), kEps, in.rows, in.dim,
                     nullptr, y_with.data(), inv.data());
  be->RmsNormForward(DType::kF64, in.x.data(), nullptr, in.w.data(), kEps, in.rows, in.dim,
                     nullptr, y_without.data(), nullptr);
  ExpectBitwiseEqual(y_without, y_with, "y");
}

TEST(RmsNormTest, BackwardMatchesFiniteDifferences) {
  RmsInputs in = RmsInputs::Make(13, 7, 37);
  std::mt19937 rng(14);
  const std::vector<double> dw0 = Uniform(rng, in.dim);  // dw accumulates into this
  const RmsOutputs analytic = RunRmsNorm<double>(in, dw0);      // dy plays the role of dL/dy
  auto forward = [&]() { return RunRmsNorm<double>(in, dw0).y; };

  ExpectGradientMatches(analytic.dx, NumericGradient(&in.x, in.dy, forward), "dx");
  std::vector<double> dw_expected = NumericGradient(&in.w, in.dy, forward);
  for (int64_t c = 0; c < in.dim; ++c) dw_expected[c] += dw0[c];
  ExpectGradientMatches(analytic.dw, dw_expected, "dw");
}

TEST(RmsNormTest, NullDwLeavesDxUnchanged) {
  const RmsInputs in = RmsInputs::Make(15, 9, 37);
  const RmsOutputs with_dw = RunRmsNorm<double>(in, std::vector<double>(in.dim, 0.0));
  std::vector<double> dx = Nans(in.x.size());
  Cpu(2)->RmsNormBackward(DType::kF64, in.x.data(), in.w.data(), with_dw.inv_rms.data(),
                          in.dy.data(), nullptr, in.rows, in.dim, dx.data(), nullptr);
  ExpectBitwiseEqual(dx, with_dw.dx, "dx");
}

TEST(RmsNormTest, F32AgreesWithF64) {
  const RmsInputs in = RmsInputs::Make(16, 31, 257).RoundedToF32();
  std::mt19937 rng(17);
  const std::vector<double> dw0 = RoundToF32(Uniform(rng, in.dim));
  const RmsOutputs f32 = RunRmsNorm<float>(in, dw0);
  const RmsOutputs f64 = RunRmsNorm<double>(in, dw0);
  const double u = kF32Unit + kF64Unit;
  const int64_t n = in.rows * in.dim;

  std::vector<double> y_bound(n), inv_bound(in.rows), dx_bound(n), dw_bound(in.dim, 0.0);
  for (int64_t r = 0; r < in.rows; ++r) {
    const double inv = f64.inv_rms[r];
    inv_bound[r] = 2 * u * inv;
    double dot = 0;
    for (int64_t c = 0; c < in.dim; ++c) {
      const int64_t i = r * in.dim + c;
      dot += in.x[i] * in.w[c] * in.dy[i];
    }
    const double coef = dot / in.dim * inv * inv * inv;
    for (int64_t c = 0; c < in.dim; ++c) {
      const int64_t i = r * in.dim + c;
      y_bound[i] = 4 * u * std::abs(f64.y[i]);
      dx_bound[i] = 10 * u * (std::abs(inv * in.w[c] * in.dy[i]) + std::abs(in.x[i] * coef));
      dw_bound[c] += (in.rows + 4) * u * std::abs(in.dy[i] * in.x[i] * inv);
    }
  }
  for (int64_t c = 0; c < in.dim; ++c) dw_bound[c] += u * std::abs(f64.dw[c]);

  ExpectWithin(f32.y, f64.y, y_bound, "y");
  ExpectWithin(f32.inv_rms, f64.inv_rms, inv_bound, "inv_rms");
  ExpectWithin(f32.dx, f64.dx, dx_bound, "dx");
  ExpectWithin(f32.dw, f64.dw, dw_bound, "dw");
}

TEST(RmsNormTest, BackwardIsBitwiseIndependentOfThreadCount) {
  // Large enough (dim * 2 * rows > 3 * 2^15) that the dw reduction really splits over
  // 2 and 3 threads; f32 so that any change of summation order would show.
  const RmsInputs in = RmsInputs::Make(18, 193, 301).RoundedToF32();
  std::mt19937 rng(19);
  const std::vector<double> dw0 = RoundToF32(Uniform(rng, in.dim));
  for (bool fused : {false, true}) {
    const RmsOutputs one = RunRmsNorm<float>(in, dw0, /*threads=*/1, fused);
    for (int threads : {2, 3}) {
      const std::string what =
          ", threads=" + std::to_string(threads) + (fused ? ", fused" : ", unfused");
      const RmsOutputs many = RunRmsNorm<float>(in, dw0, threads, fused);
      ExpectBitwiseEqual(many.dw, one.dw, "dw" + what);
      ExpectBitwiseEqual(many.dx, one.dx, "dx" + what);
      ExpectBitwiseEqual(many.y, one.y, "y" + what);
      ExpectBitwiseEqual(many.s, one.s, "s" + what);
    }
  }
}

TEST(RmsNormTest, FusedForwardMatchesReference) {
  const RmsInputs in = RmsInputs::Make(21, 13, 37);
  const RmsOutputs out = RunRmsNorm<double>(in, std::vector<double>(in.dim, 0.0), 2, true);
  std::vector<double> s(in.x.size()), y(in.x.size()), y_bound(in.x.size()), inv(in.rows),
      inv_bound(in.rows);
  const double rel = (in.dim + 7) * kF64Unit;
  for (int64_t r = 0; r < in.rows; ++r) {
    long double ss = 0;
    for (int64_t c = 0; c < in.dim; ++c) {
      const int64_t i = r * in.dim + c;
      s[i] = in.x[i] + in.res[i];
      const long double exact = static_cast<long double>(in.x[i]) + in.res[i];
      ss += exact * exact;
    }
    const long double inv_r = 1.0L / std::sqrt(ss / in.dim + kEps);
    inv[r] = static_cast<double>(inv_r);
    inv_bound[r] = rel * inv[r];
    for (int64_t c = 0; c < in.dim; ++c) {
      const int64_t i = r * in.dim + c;
      y[i] = static_cast<double>((static_cast<long double>(in.x[i]) + in.res[i]) * inv_r *
                                 in.w[c]);
      y_bound[i] = rel * std::abs(y[i]);
    }
  }
  // eps is really added: the tiny row's 1/rms is 1/sqrt(~1.7e-6 + 1e-5) ~ 290, not ~770.
  EXPECT_LT(out.inv_rms[1], 330.0);
  ExpectBitwiseEqual(out.s, s, "s");
  ExpectWithin(out.y, y, y_bound, "fused y");
  ExpectWithin(out.inv_rms, inv, inv_bound, "fused inv_rms");
}

TEST(RmsNormTest, FusedBackwardMatchesFiniteDifferences) {
  RmsInputs in = RmsInputs::Make(22, 7, 37);
  std::mt19937 rng(23);
  const std::vector<double> dw0 = Uniform(rng, in.dim);  // dw accumulates into this
  const RmsOutputs analytic = RunRmsNorm<double>(in, dw0, 2, true);
  // L = sum(dy * y) + sum(dres * s): outputs y then s, weights dy then dres.
  std::vector<double> weights = in.dy;
  weights.insert(weights.end(), in.dres.begin(), in.dres.end());
  auto forward = [&]() {
    RmsOutputs o = RunRmsNorm<double>(in, dw0, 2, true);
    o.y.insert(o.y.end(), o.s.begin(), o.s.end());
    return o.y;
  };
  ExpectGradientMatches(analytic.dx, NumericGradient(&in.x, weights, forward), "dx by x");
  ExpectGradientMatches(analytic.dx, NumericGradient(&in.res, weights, forward),
                        "dx by residual");
  std::vector<double> dw_expected = NumericGradient(&in.w, weights, forward);
  for (int64_t c = 0; c < in.dim; ++c) dw_expected[c] += dw0[c];
  ExpectGradientMatches(analytic.dw, dw_expected, "dw");
}

template <typename T>
void ExpectFusedEqualsUnfused(const std::string& type) {
  const RmsInputs in = RmsInputs::Make(24, 31, 257).RoundedToF32();
  std::mt19937 rng(25);
  const std::vector<double> dw0 = RoundToF32(Uniform(rng, in.dim));
  const RmsOutputs fused = RunRmsNorm<T>(in, dw0, 2, true);
  const RmsOutputs unfused = RunUnfused<T>(in, dw0);
  ExpectBitwiseEqual(fused.s, unfused.s, type + " s");
  ExpectBitwiseEqual(fused.y, unfused.y, type + " y");
  ExpectBitwiseEqual(fused.inv_rms, unfused.inv_rms, type + " inv_rms");
  ExpectBitwiseEqual(fused.dx, unfused.dx, type + " dx");
  ExpectBitwiseEqual(fused.dw, unfused.dw, type + " dw");
}

TEST(RmsNormTest, FusedIsBitwiseTheUnfusedOpsInF32AndF64) {
  ExpectFusedEqualsUnfused<float>("f32");
  ExpectFusedEqualsUnfused<double>("f64");
}

TEST(RmsNormTest, FusedInPlaceGivesSameBits) {
  // sum_out = x in the forward, dx = residual_grad in the backward; large enough
  // (rows * 5 * dim > 2^15) that the rows split over the threads.
  const RmsInputs in = RmsInputs::Make(26, 67, 301).RoundedToF32();
  std::mt19937 rng(27);
  const std::vector<double> dw0 = RoundToF32(Uniform(rng, in.dim));
  const RmsOutputs apart = RunRmsNorm<float>(in, dw0, 2, true);
  Backend* be = Cpu(2);
  const int64_t n = in.rows * in.dim;
  std::vector<float> s = Cast<float>(in.x), res = Cast<float>(in.res), w = Cast<float>(in.w);
  std::vector<float> dy = Cast<float>(in.dy), dx = Cast<float>(in.dres);
  std::vector<float> y(n), inv(in.rows), dw = Cast<float>(dw0);
  be->RmsNormForward(DType::kF32, s.data(), res.data(), w.data(), kEps, in.rows, in.dim,
                     s.data(), y.data(), inv.data());
  be->RmsNormBackward(DType::kF32, s.data(), w.data(), inv.data(), dy.data(), dx.data(),
                      in.rows, in.dim, dx.data(), dw.data());
  ExpectBitwiseEqual(ToDouble(s), apart.s, "s in x");
  ExpectBitwiseEqual(ToDouble(y), apart.y, "y");
  ExpectBitwiseEqual(ToDouble(inv), apart.inv_rms, "inv_rms");
  ExpectBitwiseEqual(ToDouble(dx), apart.dx, "dx in residual_grad");
  ExpectBitwiseEqual(ToDouble(dw), apart.dw, "dw");
}

}  // namespace
}  // namespace pmol::testing
