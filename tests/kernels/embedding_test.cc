// Backend::EmbeddingForward/EmbeddingBackward against: a gather written here (a copy, so
// bit-exact); a long-double scatter-add into a non-zero table with repeated ids, held to
// the summation bound (c + 1) u (|dtable0| + sum |dout|) for an id seen c times (one
// more u for f32 vs f64 on identical inputs); central finite differences in f64 of
// L = sum(w * out) with respect to the table (1e-7 * (1 + |g|), see kernel_test_util.h);
// and the 1-thread result for 2 and 3 threads (bitwise: rows are added in token order).
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

template <typename T>
std::vector<double> Gather(const std::vector<double>& table, const std::vector<int32_t>& ids,
                           int64_t dim) {
  std::vector<T> tt = Cast<T>(table), out = Cast<T>(Nans(ids.size() * dim));
  Cpu(2)->EmbeddingForward(DTypeOf<T>(), tt.data(), ids.data(), ids.size(), dim, out.data());
  return ToDouble(out);
}

template <typename T>
std::vector<double> ScatterAdd(const std::vector<double>& dout, const std::vector<int32_t>& ids,
                               int64_t dim, const std::vector<double>& dtable0, int threads = 2) {
  std::vector<T> d = Cast<T>(dout), dt = Cast<T>(dtable0);
  Cpu(threads)->EmbeddingBackward(DTypeOf<T>(), DTypeOf<T>(), d.data(), ids.data(), ids.size(), dim,
                                  dt.data());
  return ToDouble(dt);
}

// Ids with repeats, including the first and last row of the table.
std::vector<int32_t> Ids(std::mt19937& rng, int64_t n, int32_t vocab) {
  std::vector<int32_t> ids = UniformInts(rng, n, 0, vocab / 3);  // many repeats
  ids[0] = vocab - 1;
  ids[n - 1] = 0;
  ids[n / 2] = ids[1];
  return ids;
}

TEST(EmbeddingTest, ForwardGathersRows) {
  const int64_t vocab = 1001, dim = 37, n = 13;
  std::mt19937 rng(61);
  const std::vector<double> table = Uniform(rng, vocab * dim);
  const std::vector<int32_t> ids = Ids(rng, n, vocab);
  std::vector<double> expected;
  for (int32_t id : ids) {
    expected.insert(expected.end(), table.begin() + id * dim, table.begin() + (id + 1) * dim);
  }
  ExpectBitwiseEqual(Gather<double>(table, ids, dim), expected, "out f64");
  ExpectBitwiseEqual(Gather<float>(table, ids, dim), ToDouble(Cast<float>(expected)), "out f32");
}

// Reference scatter-add and its bound for unit roundoff u.
void Reference(const std::vector<double>& dout, const std::vector<int32_t>& ids, int64_t dim,
               const std::vector<double>& dtable0, double u, std::vector<double>* expected,
               std::vector<double>* bound) {
  std::vector<long double> acc(dtable0.begin(), dtable0.end());
  std::vector<long double> mag(dtable0.size());
  std::vector<int> count(dtable0.size() / dim, 0);
  for (size_t i = 0; i < dtable0.size(); ++i) mag[i] = std::abs(dtable0[i]);
  for (size_t i = 0; i < ids.size(); ++i) {
    ++count[ids[i]];
    for (int64_t c = 0; c < dim; ++c) {
      acc[ids[i] * dim + c] += dout[i * dim + c];
      mag[ids[i] * dim + c] += std::abs(dout[i * dim + c]);
    }
  }
  expected->resize(acc.size());
  bound->resize(acc.size());
  for (size_t i = 0; i < acc.size(); ++i) {
    (*expected)[i] = static_cast<double>(acc[i]);
    // An untouched row (count 0) must come back bit-exact.
    (*bound)[i] = static_cast<double>((count[i / dim] + 1) * u * mag[i]) *
                  (count[i / dim] > 0 ? 1 : 0);
  }
}

TEST(EmbeddingTest, BackwardAccumulatesRepeatedIds) {
  const int64_t vocab = 1001, dim = 37, n = 41;
  std::mt19937 rng(62);
  const std::vector<double> dout = Uniform(rng, n * dim), dtable0 = Uniform(rng, vocab * dim);
  const std::vector<int32_t> ids = Ids(rng, n, vocab);
  std::vector<double> expected, bound;
  Reference(dout, ids, dim, dtable0, kF64Unit, &expected, &bound);
  ExpectWithin(ScatterAdd<double>(dout, ids, dim, dtable0), expected, bound, "dtable");
}

TEST(EmbeddingTest, BackwardMatchesFiniteDifferences) {
  const int64_t vocab = 101, dim = 37, n = 13;
  std::mt19937 rng(63);
  std::vector<double> table = Uniform(rng, vocab * dim);
  const std::vector<double> w = Uniform(rng, n * dim);
  const std::vector<int32_t> ids = Ids(rng, n, vocab);
  const std::vector<double> numeric =
      NumericGradient(&table, w, [&]() { return Gather<double>(table, ids, dim); });
  ExpectGradientMatches(ScatterAdd<double>(w, ids, dim, std::vector<double>(vocab * dim, 0.0)),
                        numeric, "dtable");
}

TEST(EmbeddingTest, BackwardF32AgreesWithF64) {
  const int64_t vocab = 1001, dim = 37, n = 257;
  std::mt19937 rng(64);
  const std::vector<double> dout = RoundToF32(Uniform(rng, n * dim));
  const std::vector<double> dtable0 = RoundToF32(Uniform(rng, vocab * dim));
  const std::vector<int32_t> ids = Ids(rng, n, vocab);
  std::vector<double> unused, bound;
  Reference(dout, ids, dim, dtable0, kF32Unit + kF64Unit, &unused, &bound);
  ExpectWithin(ScatterAdd<float>(dout, ids, dim, dtable0),
               ScatterAdd<double>(dout, ids, dim, dtable0), bound, "dtable");
}

TEST(EmbeddingTest, BackwardIsBitwiseIndependentOfThreadCount) {
  // dim * n > 3 * 2^15, so the width really splits over 2 and 3 threads; 53 rows for 331
  // tokens gives every row several contributions whose order matters in f32.
  const int64_t vocab = 53, dim = 301, n = 331;
  std::mt19937 rng(65);
  const std::vector<double> dout = RoundToF32(Uniform(rng, n * dim));
  const std::vector<double> dtable0 = RoundToF32(Uniform(rng, vocab * dim));
  const std::vector<int32_t> ids = UniformInts(rng, n, 0, vocab - 1);
  const std::vector<double> one = ScatterAdd<float>(dout, ids, dim, dtable0, /*threads=*/1);
  for (int threads : {2, 3}) {
    ExpectBitwiseEqual(ScatterAdd<float>(dout, ids, dim, dtable0, threads), one,
                       "dtable, threads=" + std::to_string(threads));
  }
}

}  // namespace
}  // namespace pmol::testing
