// Backend::ScaleColumnBlocks and ColumnBlockDots (the expert scaling of stacked LoRA
// experts), and CopyRows (the packing of routed rows), against loops written here.
// CopyRows moves values (or adds one value to each destination element), so it must
// match bit for bit, and leave every element outside its destination rows and columns
// untouched. ScaleColumnBlocks is (alpha*s)*x, two IEEE
// products, so it must match the same two products done in the test bit for bit, also in
// place. ColumnBlockDots is checked against a long-double dot with the summation bound
// (W + 2) u sum_j |x_j y_j| |alpha| for width W (W products and additions plus the
// final scaling), and for bitwise independence of the thread count.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

constexpr int64_t kRows = 37, kBlocks = 5, kWidth = 8;

template <typename T>
class ColumnBlocksTest : public ::testing::Test {};
using ComputeTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ColumnBlocksTest, ComputeTypes);

TYPED_TEST(ColumnBlocksTest, ScaleIsTwoRoundedProducts) {
  using T = TypeParam;
  std::mt19937 rng(7);
  const std::vector<T> x = Cast<T>(Uniform(rng, kRows * kBlocks * kWidth, -2.0, 2.0));
  const std::vector<T> s = Cast<T>(Uniform(rng, kRows * kBlocks, 0.0, 1.0));
  const double alpha = 1.7;
  std::vector<T> out(x.size());
  Cpu(2)->ScaleColumnBlocks(DTypeOf<T>(), x.data(), s.data(), kRows, kBlocks, kWidth, alpha,
                            out.data());
  for (int64_t n = 0; n < kRows; ++n)
    for (int64_t b = 0; b < kBlocks; ++b)
      for (int64_t j = 0; j < kWidth; ++j) {
        const int64_t i = (n * kBlocks + b) * kWidth + j;
        const T want = (static_cast<T>(alpha) * s[n * kBlocks + b]) * x[i];
        ASSERT_EQ(out[i], want) << n << " " << b << " " << j;
      }
  // In place gives the same bits.
  std::vector<T> in_place = x;
  Cpu(1)->ScaleColumnBlocks(DTypeOf<T>(), in_place.data(), s.data(), kRows, kBlocks, kWidth,
                            alpha, in_place.data());
  EXPECT_EQ(in_place, out);
}

TYPED_TEST(ColumnBlocksTest, WidthOneIsElementwiseProduct) {
  using T = TypeParam;
  std::mt19937 rng(8);
  const std::vector<T> x = Cast<T>(Uniform(rng, kRows * kBlocks));
  const std::vector<T> s = Cast<T>(Uniform(rng, kRows * kBlocks));
  std::vector<T> out(x.size());
  Cpu(2)->ScaleColumnBlocks(DTypeOf<T>(), x.data(), s.data(), kRows, kBlocks, 1, 1.0,
                            out.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[i], s[i] * x[i]) << i;
}

TYPED_TEST(ColumnBlocksTest, DotsMatchLongDoubleWithinSummationBound) {
  using T = TypeParam;
  const double u = std::is_same_v<T, float> ? kF32Unit : kF64Unit;
  std::mt19937 rng(9);
  const std::vector<T> x = Cast<T>(Uniform(rng, kRows * kBlocks * kWidth, -2.0, 2.0));
  const std::vector<T> y = Cast<T>(Uniform(rng, kRows * kBlocks * kWidth, -2.0, 2.0));
  const double alpha = -0.37;
  std::vector<T> out(kRows * kBlocks, T(99));
  Cpu(2)->ColumnBlockDots(DTypeOf<T>(), x.data(), y.data(), kRows, kBlocks, kWidth, alpha,
                          out.data());
  for (int64_t k = 0; k < kRows * kBlocks; ++k) {
    long double sum = 0, abs_sum = 0;
    for (int64_t j = 0; j < kWidth; ++j) {
      const long double p = static_cast<long double>(x[k * kWidth + j]) * y[k * kWidth + j];
      sum += p;
      abs_sum += std::fabs(p);
    }
    const double want = static_cast<double>(static_cast<long double>(alpha) * sum);
    const double bound = (kWidth + 2) * u * std::fabs(alpha) * static_cast<double>(abs_sum) +
                         u * std::fabs(want);
    ASSERT_LE(std::fabs(out[k] - want), bound) << k;
  }
}

TYPED_TEST(ColumnBlocksTest, ThreadCountDoesNotChangeBits) {
  using T = TypeParam;
  std::mt19937 rng(10);
  const int64_t rows = 1031;
  const std::vector<T> x = Cast<T>(Uniform(rng, rows * kBlocks * kWidth));
  const std::vector<T> y = Cast<T>(Uniform(rng, rows * kBlocks * kWidth));
  std::vector<T> one(rows * kBlocks), three(rows * kBlocks);
  Cpu(1)->ColumnBlockDots(DTypeOf<T>(), x.data(), y.data(), rows, kBlocks, kWidth, 0.5,
                          one.data());
  Cpu(3)->ColumnBlockDots(DTypeOf<T>(), x.data(), y.data(), rows, kBlocks, kWidth, 0.5,
                          three.data());
  EXPECT_EQ(one, three);
}

TYPED_TEST(ColumnBlocksTest, CopyRowsGathersScattersAndAccumulates) {
  using T = TypeParam;
  std::mt19937 rng(9);
  constexpr int64_t kSrcRows = 23, kSrcStride = 19, kDstRows = 17, kDstStride = 13, kWidth = 6;
  const std::vector<T> src = Cast<T>(Uniform(rng, kSrcRows * kSrcStride));
  const std::vector<T> base = Cast<T>(Uniform(rng, kDstRows * kDstStride));
  // 9 rows: gathered from scattered source rows (one twice), into distinct destination rows.
  const std::vector<int32_t> src_rows = {22, 0, 5, 5, 17, 3, 9, 11, 1};
  const std::vector<int32_t> dst_rows = {16, 2, 0, 7, 9, 4, 12, 1, 3};
  const int64_t n = static_cast<int64_t>(src_rows.size());
  const int64_t src_col = 4, dst_col = 5;  // column offsets by pointer
  for (bool accumulate : {false, true}) {
    for (int maps = 0; maps < 4; ++maps) {
      const bool gather = maps & 1, scatter = maps & 2;
      SCOPED_TRACE(::testing::Message() << "accumulate " << accumulate << " gather " << gather
                                        << " scatter " << scatter);
      std::vector<T> want = base;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t s_i = gather ? src_rows[i] : i, d_i = scatter ? dst_rows[i] : i;
        for (int64_t j = 0; j < kWidth; ++j) {
          T& d = want[d_i * kDstStride + dst_col + j];
          const T v = src[s_i * kSrcStride + src_col + j];
          d = accumulate ? d + v : v;
        }
      }
      std::vector<T> got = base;
      Cpu(2)->CopyRows(DTypeOf<T>(), src.data() + src_col, kSrcStride, gather ? src_rows.data() : nullptr,
                       got.data() + dst_col, kDstStride, scatter ? dst_rows.data() : nullptr, n, kWidth,
                       accumulate);
      ASSERT_EQ(got, want);
    }
  }
  // Nothing to copy: nothing changes.
  std::vector<T> untouched = base;
  Cpu(1)->CopyRows(DTypeOf<T>(), src.data(), kSrcStride, nullptr, untouched.data(), kDstStride, nullptr, 0,
                   kWidth, false);
  EXPECT_EQ(untouched, base);
}

}  // namespace
}  // namespace pmol::testing
