// Backend::Fill, Axpy, Scale, AddBias and SumRows against naive loops written here:
// Fill, Scale and AddBias are single IEEE operations per element, so they must match the
// same operation done in the test bit for bit (and leave the element after the range
// alone); Axpy may contract a*x + y into an FMA, so it is held to 2 roundings:
// |err| <= 2u (|a x| + |y|). SumRows is checked against a long-double column sum with
// the summation bound (R + 1) u sum_r |dy| + u |dbias| for R rows (R + 2 for f32 vs f64
// on identical inputs), against central finite differences as the backward of AddBias
// (1e-7 * (1 + |g|), see kernel_test_util.h), and for bitwise independence of the thread
// count (the implementation sums each column over rows in order).
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

constexpr int64_t kN = 1001;
constexpr double kSentinel = 12345.0;

template <typename T>
class ElementwiseTest : public ::testing::Test {};
using ComputeTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ElementwiseTest, ComputeTypes);

TYPED_TEST(ElementwiseTest, FillSetsExactlyNElements) {
  using T = TypeParam;
  for (double value : {0.1, -3.75, 0.0}) {
    std::vector<T> x(kN + 1, static_cast<T>(kSentinel));
    Cpu(2)->Fill(DTypeOf<T>(), x.data(), value, kN);
    for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(x[i], static_cast<T>(value)) << i;
    EXPECT_EQ(x[kN], static_cast<T>(kSentinel));
  }
}

TYPED_TEST(ElementwiseTest, ScaleIsOneRoundedProduct) {
  using T = TypeParam;
  std::mt19937 rng(41);
  const std::vector<T> x0 = Cast<T>(Uniform(rng, kN, -3.0, 3.0));
  const double alpha = -0.7;
  std::vector<T> x = x0;
  x.push_back(static_cast<T>(kSentinel));
  Cpu(2)->Scale(DTypeOf<T>(), alpha, x.data(), kN);
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(x[i], static_cast<T>(alpha) * x0[i]) << i;
  EXPECT_EQ(x[kN], static_cast<T>(kSentinel));
}

TYPED_TEST(ElementwiseTest, AxpyMatchesReference) {
  using T = TypeParam;
  const double u = std::is_same_v<T, float> ? kF32Unit : kF64Unit;
  std::mt19937 rng(42);
  const std::vector<double> x = Uniform(rng, kN, -3.0, 3.0), y0 = Uniform(rng, kN, -3.0, 3.0);
  const double alpha = static_cast<T>(1.3);
  std::vector<T> xt = Cast<T>(x), yt = Cast<T>(y0);
  yt.push_back(static_cast<T>(kSentinel));
  Cpu(2)->Axpy(DTypeOf<T>(), alpha, xt.data(), yt.data(), kN);
  EXPECT_EQ(yt[kN], static_cast<T>(kSentinel));
  yt.pop_back();
  std::vector<double> expected(kN), bound(kN);
  for (int64_t i = 0; i < kN; ++i) {
    const long double ax = static_cast<long double>(alpha) * static_cast<T>(x[i]);
    const long double yi = static_cast<T>(y0[i]);
    expected[i] = static_cast<double>(ax + yi);
    bound[i] = 2 * u * static_cast<double>(std::abs(ax) + std::abs(yi));
  }
  ExpectWithin(ToDouble(yt), expected, bound, "y");
}

TYPED_TEST(ElementwiseTest, AddBiasAddsToEveryRow) {
  using T = TypeParam;
  const int64_t rows = 13, cols = 37;
  std::mt19937 rng(43);
  const std::vector<T> y0 = Cast<T>(Uniform(rng, rows * cols)), bias = Cast<T>(Uniform(rng, cols));
  std::vector<T> y = y0;
  Cpu(2)->AddBias(DTypeOf<T>(), y.data(), bias.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      ASSERT_EQ(y[r * cols + c], y0[r * cols + c] + bias[c]) << r << "," << c;
    }
  }
}

// SumRows in T into dbias0; returns the result.
template <typename T>
std::vector<double> SumRows(const std::vector<double>& dy, int64_t rows, int64_t cols,
                            const std::vector<double>& dbias0, int threads = 2) {
  std::vector<T> dyt = Cast<T>(dy), db = Cast<T>(dbias0);
  Cpu(threads)->SumRows(DTypeOf<T>(), dyt.data(), rows, cols, db.data());
  return ToDouble(db);
}

TEST(SumRowsTest, MatchesColumnSumsAndAccumulates) {
  const int64_t rows = 29, cols = 37;
  std::mt19937 rng(44);
  const std::vector<double> dy = Uniform(rng, rows * cols), dbias0 = Uniform(rng, cols);
  std::vector<double> expected(cols), bound(cols);
  for (int64_t c = 0; c < cols; ++c) {
    long double acc = 0, mag = 0;
    for (int64_t r = 0; r < rows; ++r) {
      acc += dy[r * cols + c];
      mag += std::abs(dy[r * cols + c]);
    }
    expected[c] = static_cast<double>(dbias0[c] + acc);
    bound[c] = kF64Unit * static_cast<double>((rows + 1) * mag + std::abs(expected[c]));
  }
  ExpectWithin(SumRows<double>(dy, rows, cols, dbias0), expected, bound, "dbias");
}

TEST(SumRowsTest, F32AgreesWithF64) {
  const int64_t rows = 257, cols = 37;
  std::mt19937 rng(45);
  const std::vector<double> dy = RoundToF32(Uniform(rng, rows * cols));
  const std::vector<double> dbias0 = RoundToF32(Uniform(rng, cols));
  const std::vector<double> f64 = SumRows<double>(dy, rows, cols, dbias0);
  std::vector<double> bound(cols);
  const double u = kF32Unit + kF64Unit;
  for (int64_t c = 0; c < cols; ++c) {
    double mag = std::abs(dbias0[c]);
    for (int64_t r = 0; r < rows; ++r) mag += std::abs(dy[r * cols + c]);
    bound[c] = (rows + 2) * u * mag;
  }
  ExpectWithin(SumRows<float>(dy, rows, cols, dbias0), f64, bound, "dbias");
}

TEST(SumRowsTest, IsTheBackwardOfAddBias) {
  const int64_t rows = 13, cols = 37;
  std::mt19937 rng(46);
  const std::vector<double> y = Uniform(rng, rows * cols), g = Uniform(rng, rows * cols);
  std::vector<double> bias = Uniform(rng, cols);
  const std::vector<double> numeric = NumericGradient(&bias, g, [&]() {
    std::vector<double> out = y;
    Cpu(2)->AddBias(DType::kF64, out.data(), bias.data(), rows, cols);
    return out;
  });
  ExpectGradientMatches(SumRows<double>(g, rows, cols, std::vector<double>(cols, 0.0)), numeric,
                        "dbias");
}

TEST(SumRowsTest, IsBitwiseIndependentOfThreadCount) {
  // cols * rows > 3 * 2^15, so the columns really split over 2 and 3 threads.
  const int64_t rows = 331, cols = 301;
  std::mt19937 rng(47);
  const std::vector<double> dy = RoundToF32(Uniform(rng, rows * cols));
  const std::vector<double> dbias0 = RoundToF32(Uniform(rng, cols));
  const std::vector<double> one = SumRows<float>(dy, rows, cols, dbias0, /*threads=*/1);
  for (int threads : {2, 3}) {
    ExpectBitwiseEqual(SumRows<float>(dy, rows, cols, dbias0, threads), one,
                       "dbias, threads=" + std::to_string(threads));
  }
}

}  // namespace
}  // namespace pmol::testing
