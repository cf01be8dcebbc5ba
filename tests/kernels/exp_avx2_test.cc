// Exp8NonPositive against double exp: relative error at most 2^-22 (2 ulp of float) on a
// dense sweep of [-87.3, 0] and on every float in [-1, 0] that is a multiple of 2^-20;
// exactly 0 below the underflow bound; exp(0) = 1 exactly.
#include "kernels/cpu/exp_avx2.h"

#include <cmath>

#include "gtest/gtest.h"

namespace pmol::cpu {
namespace {

double WorstRelativeError(const std::vector<float>& xs) {
  double worst = 0;
  for (size_t i = 0; i + 8 <= xs.size(); i += 8) {
    alignas(32) float out[8];
    _mm256_store_ps(out, Exp8NonPositive(_mm256_loadu_ps(xs.data() + i)));
    for (int k = 0; k < 8; ++k) {
      const double want = std::exp(static_cast<double>(xs[i + k]));
      worst = std::max(worst, std::abs(out[k] - want) / want);
    }
  }
  return worst;
}

TEST(Exp8Test, WithinTwoUlpOverTheRange) {
  std::vector<float> sweep;
  for (int i = 0; i < 8 * 200000; ++i) sweep.push_back(-87.3f * static_cast<float>(i) / (8 * 200000));
  EXPECT_LT(WorstRelativeError(sweep), std::ldexp(1.0, -22));
  std::vector<float> fine;
  for (int i = 0; i < (1 << 20); ++i) fine.push_back(-static_cast<float>(i) * std::ldexp(1.0f, -20));
  EXPECT_LT(WorstRelativeError(fine), std::ldexp(1.0, -22));
}

TEST(Exp8Test, UnderflowIsZeroAndZeroIsOne) {
  alignas(32) float out[8];
  const float xs[8] = {0.0f, -0.0f, -88.0f, -100.0f, -1e30f, -INFINITY, kExp8Lowest, -87.0f};
  _mm256_store_ps(out, Exp8NonPositive(_mm256_loadu_ps(xs)));
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f);
  for (int k = 2; k < 6; ++k) EXPECT_EQ(out[k], 0.0f) << xs[k];
  EXPECT_NEAR(out[6] / std::exp(static_cast<double>(kExp8Lowest)), 1.0, 1e-6);
  EXPECT_NEAR(out[7] / std::exp(-87.0), 1.0, 1e-6);
}

}  // namespace
}  // namespace pmol::cpu
