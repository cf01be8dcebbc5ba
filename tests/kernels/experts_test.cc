// Backend::ExpertsDown and ExpertsUpBackward (the PMoL experts' stacked projections with
// the router's gates fused in) on the CPU, against loops written here in long double:
//   p = x a^T, h = p, hs[n, b*w+j] = alpha g[n, b] p[n, b*w+j];
//   q = dy b, dg[n, b] = alpha sum_j q[n, b*w+j] h[n, b*w+j], dh = alpha g q.
// f64 bound per element: the k-term (d-term) products and sums of p (q) in f64, then at
// most two more products: (k + 4) u sum_i |x_i a_i| |alpha g| with u = 2^-53, and for dg
// (d + w + 4) u sum over the block of |q_j h_j| terms, bounded by the exact |q| sums.
// Each output is checked against its own bound, so a wrong gate, block, transposition or
// a missing alpha is far outside. f32 must be bit for bit the documented composition on
// this backend (Gemm, then ScaleColumnBlocks / ColumnBlockDots on its result), which is
// also what the op replaced in adapters/pmol_linear.cc. Outputs not asked for are not
// written (h without gates, dg without gates).
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

constexpr int64_t kRows = 29, kK = 37, kD = 21, kBlocks = 3, kWidth = 5, kCols = kBlocks * kWidth;
constexpr double kAlpha = 1.75;

struct Inputs {
  std::vector<double> x, a, g, dy, b, h;
};

Inputs MakeInputs(uint32_t seed) {
  std::mt19937 rng(seed);
  Inputs in;
  in.x = Uniform(rng, kRows * kK, -2.0, 2.0);
  in.a = Uniform(rng, kCols * kK);
  in.g = Uniform(rng, kRows * kBlocks, 0.0, 1.0);
  in.dy = Uniform(rng, kRows * kD, -2.0, 2.0);
  in.b = Uniform(rng, kD * kCols);
  in.h = Uniform(rng, kRows * kCols);
  return in;
}

TEST(ExpertsTest, F64DownMatchesLongDoubleLoops) {
  const Inputs in = MakeInputs(1);
  for (bool gated : {true, false}) {
    SCOPED_TRACE(gated ? "gated" : "plain LoRA");
    std::vector<double> h = Nans(kRows * kCols), hs = Nans(kRows * kCols);
    Cpu(2)->ExpertsDown(DType::kF64, in.x.data(), in.a.data(), gated ? in.g.data() : nullptr,
                        kRows, kK, kBlocks, kWidth, kAlpha, h.data(), hs.data());
    for (int64_t n = 0; n < kRows; ++n) {
      for (int64_t c = 0; c < kCols; ++c) {
        long double p = 0, abs_sum = 0;
        for (int64_t i = 0; i < kK; ++i) {
          p += static_cast<long double>(in.x[n * kK + i]) * in.a[c * kK + i];
          abs_sum += std::fabs(static_cast<long double>(in.x[n * kK + i]) * in.a[c * kK + i]);
        }
        const double gate = gated ? in.g[n * kBlocks + c / kWidth] : 1.0;
        const double bound = (kK + 4) * 0x1p-53 * static_cast<double>(abs_sum) * kAlpha;
        const int64_t at = n * kCols + c;
        EXPECT_NEAR(hs[at], static_cast<double>(kAlpha * gate * p), bound) << n << " " << c;
        EXPECT_NEAR(h[at], static_cast<double>(p), bound) << n << " " << c;
      }
    }
  }
}

TEST(ExpertsTest, F64UpBackwardMatchesLongDoubleLoops) {
  const Inputs in = MakeInputs(2);
  for (bool gated : {true, false}) {
    SCOPED_TRACE(gated ? "gated" : "plain LoRA");
    std::vector<double> dh = Nans(kRows * kCols), dg = Nans(kRows * kBlocks);
    Cpu(2)->ExpertsUpBackward(DType::kF64, in.dy.data(), in.b.data(), in.h.data(),
                              gated ? in.g.data() : nullptr, kRows, kD, kBlocks, kWidth, kAlpha,
                              dg.data(), dh.data());
    for (int64_t n = 0; n < kRows; ++n) {
      for (int64_t blk = 0; blk < kBlocks; ++blk) {
        long double dot = 0, dot_bound = 0;
        for (int64_t j = 0; j < kWidth; ++j) {
          const int64_t c = blk * kWidth + j;
          long double q = 0, abs_sum = 0;
          for (int64_t i = 0; i < kD; ++i) {
            q += static_cast<long double>(in.dy[n * kD + i]) * in.b[i * kCols + c];
            abs_sum += std::fabs(static_cast<long double>(in.dy[n * kD + i]) * in.b[i * kCols + c]);
          }
          const double gate = gated ? in.g[n * kBlocks + blk] : 1.0;
          const double bound = (kD + 4) * 0x1p-53 * static_cast<double>(abs_sum) * kAlpha;
          EXPECT_NEAR(dh[n * kCols + c], static_cast<double>(kAlpha * gate * q), bound)
              << n << " " << c;
          dot += q * in.h[n * kCols + c];
          dot_bound += abs_sum * std::fabs(in.h[n * kCols + c]);
        }
        const int64_t at = n * kBlocks + blk;
        if (!gated) {
          EXPECT_TRUE(std::isnan(dg[at])) << "dg written without gates";
          continue;
        }
        EXPECT_NEAR(dg[at], static_cast<double>(kAlpha * dot),
                    (kD + kWidth + 4) * 0x1p-53 * static_cast<double>(dot_bound) * kAlpha)
            << n << " " << blk;
      }
    }
  }
}

TEST(ExpertsTest, F32IsGemmThenTheGatesBitForBit) {
  const Inputs in = MakeInputs(3);
  const std::vector<float> x = Cast<float>(in.x), a = Cast<float>(in.a), g = Cast<float>(in.g),
                           dy = Cast<float>(in.dy), b = Cast<float>(in.b), h = Cast<float>(in.h);
  Backend* be = Cpu(2);
  std::vector<float> p(kRows * kCols), hs_want(kRows * kCols), h_got(kRows * kCols),
      hs_got(kRows * kCols);
  be->Gemm(DType::kF32, false, true, kRows, kCols, kK, 1.0, x.data(), kK, a.data(), kK, 0.0,
           p.data(), kCols);
  be->ScaleColumnBlocks(DType::kF32, p.data(), g.data(), kRows, kBlocks, kWidth, kAlpha,
                        hs_want.data());
  be->ExpertsDown(DType::kF32, x.data(), a.data(), g.data(), kRows, kK, kBlocks, kWidth, kAlpha,
                  h_got.data(), hs_got.data());
  ExpectBitwiseEqual(h_got, p, "h");
  ExpectBitwiseEqual(hs_got, hs_want, "hs");

  std::vector<float> q(kRows * kCols), dg_want(kRows * kBlocks), dg_got(kRows * kBlocks),
      dh_got(kRows * kCols);
  be->Gemm(DType::kF32, false, false, kRows, kCols, kD, 1.0, dy.data(), kD, b.data(), kCols, 0.0,
           q.data(), kCols);
  be->ColumnBlockDots(DType::kF32, q.data(), h.data(), kRows, kBlocks, kWidth, kAlpha,
                      dg_want.data());
  be->ScaleColumnBlocks(DType::kF32, q.data(), g.data(), kRows, kBlocks, kWidth, kAlpha, q.data());
  be->ExpertsUpBackward(DType::kF32, dy.data(), b.data(), h.data(), g.data(), kRows, kD, kBlocks,
                        kWidth, kAlpha, dg_got.data(), dh_got.data());
  ExpectBitwiseEqual(dg_got, dg_want, "dg");
  ExpectBitwiseEqual(dh_got, q, "dh");
}

}  // namespace
}  // namespace pmol::testing
