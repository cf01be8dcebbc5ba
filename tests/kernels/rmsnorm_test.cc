// Backend::RmsNormForward/RmsNormBackward against: a long-double reference of
// y = x * w / sqrt(mean(x^2) + eps); central finite differences in f64 of
// L = sum(g * y) for dx and dw (dw accumulating into a non-zero buffer); the f64 kernel
// for the f32 kernel; and the 1-thread result for 2 and 3 threads (bitwise: the
// implementation promises a thread-independent dw reduction).
//
// Tolerances (u = unit roundoff): the f64 forward sums dim squares (relative error
// <= dim*u), halves it through the sqrt and adds a few roundings: (dim + 5)*u*|y|.
// f32 vs f64 on identical f32 inputs, following each rounding of the f32 code path:
//   y  = x*inv*w, inv rounded once from double:             4u |y|
//   dx = inv*w*dy - x*coef, coef = f32(mean(xw dy))*inv^3:  10u (|inv w dy| + |x coef|)
//   dw += sum_r dy*x*inv accumulated in f32 over R rows:    (R + 4)u sum_r |dy x inv| + u|dw|
// Finite differences: see kernel_test_util.h (1e-7 * (1 + |g|)).
#include <cmath>
#include <cstdint>
#include <random>
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
    return in;
  }
  RmsInputs RoundedToF32() const {
    RmsInputs r = *this;
    r.x = RoundToF32(x);
    r.w = RoundToF32(w);
    r.dy = RoundToF32(dy);
    return r;
  }
};

struct RmsOutputs {
  std::vector<double> y, inv_rms, dx, dw;
};

// Runs forward then backward in T with dw starting at dw0.
template <typename T>
RmsOutputs RunRmsNorm(const RmsInputs& in, const std::vector<double>& dw0, int threads = 2) {
  Backend* be = Cpu(threads);
  const int64_t n = in.rows * in.dim;
  std::vector<T> x = Cast<T>(in.x), w = Cast<T>(in.w), dy = Cast<T>(in.dy);
  std::vector<T> y(n), inv(in.rows), dx = Cast<T>(Nans(n)), dw = Cast<T>(dw0);
  be->RmsNormForward(DTypeOf<T>(), x.data(), w.data(), kEps, in.rows, in.dim, y.data(),
                     inv.data());
  be->RmsNormBackward(DTypeOf<T>(), x.data(), w.data(), inv.data(), dy.data(), in.rows, in.dim,
                      dx.data(), dw.data());
  return {ToDouble(y), ToDouble(inv), ToDouble(dx), ToDouble(dw)};
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
  be->RmsNormForward(DType::kF64, in.x.data(), in.w.data(), kEps, in.rows, in.dim, y_with.data(),
                     inv.data());
  be->RmsNormForward(DType::kF64, in.x.data(), in.w.data(), kEps, in.rows, in.dim,
                     y_without.data(), nullptr);
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
                          in.dy.data(), in.rows, in.dim, dx.data(), nullptr);
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
  const RmsOutputs one = RunRmsNorm<float>(in, dw0, /*threads=*/1);
  for (int threads : {2, 3}) {
    const RmsOutputs many = RunRmsNorm<float>(in, dw0, threads);
    ExpectBitwiseEqual(many.dw, one.dw, "dw, threads=" + std::to_string(threads));
    ExpectBitwiseEqual(many.dx, one.dx, "dx, threads=" + std::to_string(threads));
    ExpectBitwiseEqual(many.y, one.y, "y, threads=" + std::to_string(threads));
  }
}

}  // namespace
}  // namespace pmol::testing
