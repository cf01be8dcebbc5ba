// HeadLogProbsAt / HeadLogProbsBackward (pmol/model/head_logprobs.h) against an oracle
// written here in long double: logp_i = z_i[t_i] - logsumexp(z_i) with z_i = h[s_i] W^T,
// basis_i = (onehot(t_i) - softmax(z_i)) W, dh[s] = sum_{i: s_i = s} g_i basis_i; and the
// backward against central finite differences of L(h) = sum_i g_i logp_i(h).
// Positions repeat (a shared prompt's last token predicts both replies) and some targets
// are -1 (uncounted: logp 0, no gradient). Chunk budgets of 2, 3 and all rows, so chunk
// boundaries and a partial last chunk are crossed.
// Tolerances: f64 against long double, 1e-12 absolute (values and gradients are O(1),
// sums of <= 37 terms); finite differences, step 1e-5: truncation ~1e-10 * |d3L| and
// rounding ~1e-16 / 1e-5, so 1e-7; f32 against f64, 2e-5 (a 37-term softmax and two
// 6-term and 37-term dot products in f32, u = 6e-8, with margin).
#include "pmol/model/head_logprobs.h"

#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "pmol/core/tensor.h"

namespace pmol {
namespace {

Backend* Cpu() { return GetBackend(DeviceType::kCpu, 2).value(); }

constexpr int64_t kN = 8, kH = 6, kV = 37;
const std::vector<int32_t> kPositions = {1, 2, 2, 3, 5, 5, 6, 0, 7, 4};
const std::vector<int32_t> kTargets = {3, 36, 0, -1, 17, 17, 8, 29, -1, 11};
constexpr int64_t kM = 10;

struct Oracle {
  std::vector<double> logp, basis, dhidden;
};

Oracle Reference(const std::vector<double>& h, const std::vector<double>& w,
                 const std::vector<double>& g) {
  Oracle o;
  o.logp.assign(kM, 0.0);
  o.basis.assign(kM * kH, 0.0);
  o.dhidden.assign(kN * kH, 0.0);
  for (int64_t i = 0; i < kM; ++i) {
    if (kTargets[i] < 0) continue;
    std::vector<long double> z(kV);
    long double zmax = -INFINITY;
    for (int64_t v = 0; v < kV; ++v) {
      z[v] = 0;
      for (int64_t k = 0; k < kH; ++k) z[v] += static_cast<long double>(h[kPositions[i] * kH + k]) * w[v * kH + k];
      zmax = std::max(zmax, z[v]);
    }
    long double sum = 0;
    for (int64_t v = 0; v < kV; ++v) sum += std::exp(z[v] - zmax);
    const long double lse = zmax + std::log(sum);
    o.logp[i] = static_cast<double>(z[kTargets[i]] - lse);
    for (int64_t k = 0; k < kH; ++k) {
      long double b = w[kTargets[i] * kH + k];
      for (int64_t v = 0; v < kV; ++v) b -= std::exp(z[v] - lse) * w[v * kH + k];
      o.basis[i * kH + k] = static_cast<double>(b);
      o.dhidden[kPositions[i] * kH + k] += static_cast<double>(g[i] * b);
    }
  }
  return o;
}

std::vector<double> Random(std::mt19937& rng, int64_t n, double scale) {
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = normal(rng);
  return v;
}

template <typename T>
Tensor Make(const std::vector<double>& v, const Shape& shape) {
  std::vector<T> cast(v.begin(), v.end());
  return Tensor::FromHost(cast.data(), shape,
                          std::is_same_v<T, float> ? DType::kF32 : DType::kF64, Cpu());
}

void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, double tol,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << what << "[" << i << "]";
}

struct Inputs {
  std::vector<double> h, w, g;
  Tensor positions, targets;
};

Inputs MakeInputs() {
  std::mt19937 rng(17);
  Inputs in;
  in.h = Random(rng, kN * kH, 1.0);
  in.w = Random(rng, kV * kH, 0.7);
  in.g = Random(rng, kM, 1.0);
  in.positions = Tensor::FromHost(kPositions.data(), {kM}, DType::kI32, Cpu());
  in.targets = Tensor::FromHost(kTargets.data(), {kM}, DType::kI32, Cpu());
  return in;
}

TEST(HeadLogProbsTest, MatchesTheOracleInEveryChunking) {
  const Inputs in = MakeInputs();
  const Oracle want = Reference(in.h, in.w, in.g);
  const Tensor hidden = Make<double>(in.h, {kN, kH}), head = Make<double>(in.w, {kV, kH});
  const Tensor dlogp = Make<double>(in.g, {kM});
  for (int64_t chunk_rows : {int64_t{2}, int64_t{3}, kM}) {
    const std::string what = "chunks of " + std::to_string(chunk_rows) + " rows: ";
    const int64_t bytes = chunk_rows * kV * 8;
    ASSERT_EQ(HeadChunkRows(hidden, kV, bytes), chunk_rows);
    const HeadLogProbs got = HeadLogProbsAt(head, hidden, in.positions, in.targets, true, bytes);
    ExpectNear(got.logp.ToDoubles(), want.logp, 1e-12, what + "logp");
    ExpectNear(got.basis.ToDoubles(), want.basis, 1e-12, what + "basis");
    ExpectNear(HeadLogProbsBackward(got, hidden, in.positions, dlogp).ToDoubles(), want.dhidden,
               1e-12, what + "dhidden");
    const HeadLogProbs no_basis = HeadLogProbsAt(head, hidden, in.positions, in.targets, false, bytes);
    EXPECT_FALSE(no_basis.basis.defined());
    ExpectNear(no_basis.logp.ToDoubles(), want.logp, 1e-12, what + "logp without basis");
  }
}

TEST(HeadLogProbsTest, BackwardMatchesFiniteDifferences) {
  const Inputs in = MakeInputs();
  const Tensor head = Make<double>(in.w, {kV, kH});
  auto loss = [&](const std::vector<double>& h) {
    const std::vector<double> logp =
        HeadLogProbsAt(head, Make<double>(h, {kN, kH}), in.positions, in.targets, false, 3 * kV * 8)
            .logp.ToDoubles();
    double l = 0;
    for (int64_t i = 0; i < kM; ++i) l += in.g[i] * logp[i];
    return l;
  };
  const Tensor hidden = Make<double>(in.h, {kN, kH});
  const HeadLogProbs fwd = HeadLogProbsAt(head, hidden, in.positions, in.targets, true, 3 * kV * 8);
  const std::vector<double> dh =
      HeadLogProbsBackward(fwd, hidden, in.positions, Make<double>(in.g, {kM})).ToDoubles();
  constexpr double kStep = 1e-5;
  int nonzero = 0;
  for (int64_t j = 0; j < kN * kH; ++j) {
    std::vector<double> plus = in.h, minus = in.h;
    plus[j] += kStep;
    minus[j] -= kStep;
    const double fd = (loss(plus) - loss(minus)) / (2 * kStep);
    EXPECT_NEAR(dh[j], fd, 1e-7) << "dh[" << j << "]";
    nonzero += std::abs(fd) > 1e-3;
  }
  EXPECT_GT(nonzero, kN * kH / 2) << "the gradient should not be mostly zero";
}

TEST(HeadLogProbsTest, F32AgreesWithF64) {
  const Inputs in = MakeInputs();
  const HeadLogProbs f64 = HeadLogProbsAt(Make<double>(in.w, {kV, kH}), Make<double>(in.h, {kN, kH}),
                                          in.positions, in.targets, true, 4 * kV * 8);
  const Tensor hidden32 = Make<float>(in.h, {kN, kH});
  const HeadLogProbs f32 = HeadLogProbsAt(Make<float>(in.w, {kV, kH}), hidden32, in.positions,
                                          in.targets, true, 4 * kV * 4);
  ExpectNear(f32.logp.ToDoubles(), f64.logp.ToDoubles(), 2e-5, "logp");
  ExpectNear(f32.basis.ToDoubles(), f64.basis.ToDoubles(), 2e-5, "basis");
  const std::vector<double> d64 =
      HeadLogProbsBackward(f64, Make<double>(in.h, {kN, kH}), in.positions, Make<double>(in.g, {kM}))
          .ToDoubles();
  const std::vector<double> d32 =
      HeadLogProbsBackward(f32, hidden32, in.positions, Make<float>(in.g, {kM})).ToDoubles();
  ExpectNear(d32, d64, 2e-5, "dhidden");
}

TEST(HeadLogProbsTest, ChunkRows) {
  const Tensor hidden = Tensor::Empty({4, 8}, DType::kF32, Cpu());
  EXPECT_EQ(HeadChunkRows(hidden, 1000), (int64_t{8} << 20) / 4000) << "the CPU's 8 MiB";
  EXPECT_EQ(HeadChunkRows(hidden, 16000), 256) << "at least 256 rows by default";
  EXPECT_EQ(HeadChunkRows(hidden, 16000, 640000), 10) << "an explicit budget";
  EXPECT_EQ(HeadChunkRows(hidden, int64_t{1} << 30, 1), 1) << "at least one row";
}

}  // namespace
}  // namespace pmol
