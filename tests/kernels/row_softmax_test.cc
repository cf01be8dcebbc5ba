// Backend::RowSoftmax / RowSoftmaxBackward (the router's dense probabilities) on the CPU:
// f64 against a long-double reference; the backward against central finite differences
// of sum_k w_k y_k (kernel_test_util.h's tolerance); in place (y = x, dx = dy) equal to
// out of place; f32 against f64 on the same f32 inputs; 1, 2 and 3 threads bit for bit
// (rows are independent). Shapes: 7 slots (3 groups x 2 experts + 1 empty, the benchmark's
// router), 33 (a 32-wide block plus one), 1 (y = 1, dx = 0), and scale 1/0.7 and 1.
// Tolerances: y = e_j / sum e_i with every e_i = exp(scale x_i - m) within ~2u of exact
// and a sum of `cols` positive terms: |err| <= (cols + 4) u y; the f32 bound uses u_f32 with
// scale * x rounded in f32 (|scale x| <= 2: another 2 * 2u in the exponent), so
// (cols + 10) u_f32 y; backward dx = scale y (dy - <y, dy>): (cols + 6) u scale y (|dy| +
// sum |y_i dy_i|) in f64, with the f32 inputs' error carried as for y.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

std::vector<double> ReferenceSoftmax(const std::vector<double>& x, int64_t rows, int64_t cols,
                                     double scale) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    long double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < cols; ++j) m = std::max<long double>(m, scale * static_cast<long double>(x[r * cols + j]));
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(scale * static_cast<long double>(x[r * cols + j]) - m);
    for (int64_t j = 0; j < cols; ++j)
      y[r * cols + j] = static_cast<double>(std::exp(scale * static_cast<long double>(x[r * cols + j]) - m) / sum);
  }
  return y;
}

template <typename T>
std::vector<double> Softmax(int threads, const std::vector<double>& x, int64_t rows, int64_t cols,
                            double scale) {
  std::vector<T> in = Cast<T>(x), out(x.size());
  Cpu(threads)->RowSoftmax(DTypeOf<T>(), in.data(), rows, cols, scale, out.data());
  return ToDouble(out);
}

template <typename T>
std::vector<double> SoftmaxBackward(int threads, const std::vector<double>& y,
                                    const std::vector<double>& dy, int64_t rows, int64_t cols,
                                    double scale) {
  std::vector<T> yt = Cast<T>(y), dyt = Cast<T>(dy), dx(y.size());
  Cpu(threads)->RowSoftmaxBackward(DTypeOf<T>(), yt.data(), dyt.data(), rows, cols, scale,
                                   dx.data());
  return ToDouble(dx);
}

struct Shape2 {
  int64_t rows, cols;
  double scale;
};

class RowSoftmaxTest : public ::testing::TestWithParam<Shape2> {};

TEST_P(RowSoftmaxTest, ForwardMatchesLongDouble) {
  const auto [rows, cols, scale] = GetParam();
  std::mt19937 rng(11 + cols);
  const std::vector<double> x = Uniform(rng, rows * cols, -2.0, 2.0);
  const std::vector<double> want = ReferenceSoftmax(x, rows, cols, scale);
  std::vector<double> bound(want.size());
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = (cols + 4) * kF64Unit * want[i];
  ExpectWithin(Softmax<double>(2, x, rows, cols, scale), want, bound, "y");

  const std::vector<double> x32 = RoundToF32(x);
  const std::vector<double> want32 = ReferenceSoftmax(x32, rows, cols, scale);
  for (size_t i = 0; i < bound.size(); ++i) bound[i] = (cols + 10) * kF32Unit * want32[i];
  ExpectWithin(Softmax<float>(2, x32, rows, cols, scale), want32, bound, "y f32");
}

TEST_P(RowSoftmaxTest, BackwardMatchesFiniteDifferences) {
  const auto [all_rows, cols, scale] = GetParam();
  const int64_t rows = std::min<int64_t>(all_rows, 40);  // finite differences cost rows^2
  std::mt19937 rng(23 + cols);
  std::vector<double> x = Uniform(rng, rows * cols, -2.0, 2.0);
  const std::vector<double> w = Uniform(rng, rows * cols);
  const std::vector<double> y = Softmax<double>(2, x, rows, cols, scale);
  const std::vector<double> dx = SoftmaxBackward<double>(2, y, w, rows, cols, scale);
  const std::vector<double> numeric =
      NumericGradient(&x, w, [&] { return Softmax<double>(2, x, rows, cols, scale); });
  ExpectGradientMatches(dx, numeric, "dx");
  if (cols == 1) EXPECT_EQ(MaxAbs(dx), 0.0) << "a one-slot softmax is constant";
  else EXPECT_GT(MaxAbs(dx), 1e-3) << "the check is not empty";

  // f32 against f64 on the same f32-rounded y and dy.
  const std::vector<double> y32 = RoundToF32(y), dy32 = RoundToF32(w);
  const std::vector<double> d64 = SoftmaxBackward<double>(2, y32, dy32, rows, cols, scale);
  std::vector<double> bound(d64.size());
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0;
    for (int64_t j = 0; j < cols; ++j) dot += std::abs(y32[r * cols + j] * dy32[r * cols + j]);
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t i = r * cols + j;
      bound[i] = (cols + 6) * (kF32Unit + kF64Unit) * scale * y32[i] * (std::abs(dy32[i]) + dot);
    }
  }
  ExpectWithin(SoftmaxBackward<float>(2, y32, dy32, rows, cols, scale), d64, bound, "dx f32");
}

TEST_P(RowSoftmaxTest, InPlaceAndAnyThreadCountGiveTheSameBits) {
  const auto [rows, cols, scale] = GetParam();
  std::mt19937 rng(37 + cols);
  const std::vector<double> x = Uniform(rng, rows * cols, -2.0, 2.0);
  const std::vector<double> dy = Uniform(rng, rows * cols);
  const std::vector<double> y = Softmax<double>(1, x, rows, cols, scale);
  const std::vector<double> dx = SoftmaxBackward<double>(1, y, dy, rows, cols, scale);
  for (int threads : {2, 3}) {
    ExpectBitwiseEqual(Softmax<double>(threads, x, rows, cols, scale), y, "y, threads");
    ExpectBitwiseEqual(SoftmaxBackward<double>(threads, y, dy, rows, cols, scale), dx,
                       "dx, threads");
  }
  std::vector<double> inplace = x;
  Cpu(2)->RowSoftmax(DType::kF64, inplace.data(), rows, cols, scale, inplace.data());
  ExpectBitwiseEqual(inplace, y, "y in place");
  inplace = dy;
  Cpu(2)->RowSoftmaxBackward(DType::kF64, y.data(), inplace.data(), rows, cols, scale,
                             inplace.data());
  ExpectBitwiseEqual(inplace, dx, "dx in place");
  Cpu(2);
}

// 5000 rows x 7 columns: enough work for the pool to split the rows.
INSTANTIATE_TEST_SUITE_P(Shapes, RowSoftmaxTest,
                         ::testing::Values(Shape2{5000, 7, 1.0 / 0.7}, Shape2{37, 33, 1.0},
                                           Shape2{9, 1, 1.0}),
                         [](const auto& info) {
                           return "Rows" + std::to_string(info.param.rows) + "Cols" +
                                  std::to_string(info.param.cols);
                         });

}  // namespace
}  // namespace pmol::testing
