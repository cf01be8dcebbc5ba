// Shared helpers for the CPU backend tests (tests/kernels/*_test.cc): the backend with a
// chosen thread count, seeded random inputs, f32/f64 casts, central finite differences
// in double, and element-wise comparisons against per-element error bounds.
//
// Finite differences: for L(x) = sum_k w_k f_k(x) the numeric gradient is
//   dL/dx_i ~= sum_k w_k (f_k(x + h e_i) - f_k(x - h e_i)) / (x_i+h - (x_i-h)),
// summed from the per-output differences, so outputs that do not depend on x_i cancel
// exactly instead of adding the rounding noise of a large total.  With h = 1e-6 and
// inputs and outputs of order one, the truncation error is h^2/6 |f'''| ~ 1e-12 and the
// roundoff is ~ (a few ulp of f, 2^-53 * 4) / (2h) ~ 2e-10 per affected output, i.e.
// < 1e-8 even when a few hundred outputs move.  kFdTolerance = 1e-7 (scaled by
// 1 + |g|) therefore sits an order of magnitude above that noise, and still five or more
// orders below the O(1e-2 .. 1) errors a wrong term, sign or factor in a backward gives.
#ifndef PMOL_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
#define PMOL_TESTS_KERNELS_KERNEL_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace pmol::testing {

// Unit roundoff (half an ulp of 1) of f32 and f64.
inline constexpr double kF32Unit = 0x1p-24;
inline constexpr double kF64Unit = 0x1p-53;

inline constexpr double kFdStep = 1e-6;
inline constexpr double kFdTolerance = 1e-7;

// The process-wide CPU backend with `threads` OpenMP/BLAS threads.
inline Backend* Cpu(int threads) {
  absl::StatusOr<Backend*> backend = GetBackend(DeviceType::kCpu, threads);
  if (!backend.ok()) {
    ADD_FAILURE() << backend.status();
    return nullptr;
  }
  return *backend;
}

template <typename T>
constexpr DType DTypeOf() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  return std::is_same_v<T, float> ? DType::kF32 : DType::kF64;
}

// Deterministic uniform values in [lo, hi).
inline std::vector<double> Uniform(std::mt19937& rng, int64_t n, double lo = -1.0,
                                   double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

inline std::vector<int32_t> UniformInts(std::mt19937& rng, int64_t n, int32_t lo,
                                        int32_t hi_inclusive) {
  std::uniform_int_distribution<int32_t> dist(lo, hi_inclusive);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

template <typename T>
std::vector<T> Cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <typename T>
std::vector<double> ToDouble(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Rounds every element to the nearest f32, so f32 and f64 runs see identical inputs.
inline std::vector<double> RoundToF32(std::vector<double> v) {
  for (double& x : v) x = static_cast<float>(x);
  return v;
}

inline std::vector<double> Nans(int64_t n) {
  return std::vector<double>(n, std::numeric_limits<double>::quiet_NaN());
}

inline double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Numeric gradient of sum_k w[k] * f()[k] with respect to every element of *x, where f
// reads *x. *x is restored afterwards.
inline std::vector<double> NumericGradient(std::vector<double>* x, const std::vector<double>& w,
                                           const std::function<std::vector<double>()>& f,
                                           double h = kFdStep) {
  std::vector<double> grad(x->size());
  for (size_t i = 0; i < x->size(); ++i) {
    const double x0 = (*x)[i];
    const double xp = x0 + h, xm = x0 - h;
    (*x)[i] = xp;
    const std::vector<double> fp = f();
    (*x)[i] = xm;
    const std::vector<double> fm = f();
    (*x)[i] = x0;
    EXPECT_EQ(fp.size(), w.size());
    long double acc = 0;
    for (size_t k = 0; k < w.size(); ++k) {
      acc += static_cast<long double>(w[k]) * (static_cast<long double>(fp[k]) - fm[k]);
    }
    grad[i] = static_cast<double>(acc / (static_cast<long double>(xp) - xm));
  }
  return grad;
}

// Expects |actual[i] - expected[i]| <= bound[i] for every i (NaN never passes). Records
// the largest err/bound ratio as a test property ("<what>_max_err_over_bound").
inline void ExpectWithin(const std::vector<double>& actual, const std::vector<double>& expected,
                         const std::vector<double>& bound, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  ASSERT_EQ(bound.size(), expected.size()) << what;
  double worst_ratio = 0;
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::abs(actual[i] - expected[i]);
    const bool ok = err <= bound[i];  // false for NaN
    if (bound[i] > 0) worst_ratio = std::max(worst_ratio, err / bound[i]);
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: got " << actual[i] << ", expected "
                    << expected[i] << ", |err| " << err << " > bound " << bound[i];
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << actual.size()
                         << " elements outside their bound";
  ::testing::Test::RecordProperty(what + "_max_err_over_bound", std::to_string(worst_ratio));
}

// The finite-difference check: |analytic - numeric| <= kFdTolerance * (1 + |numeric|).
inline void ExpectGradientMatches(const std::vector<double>& analytic,
                                  const std::vector<double>& numeric, const std::string& what) {
  std::vector<double> bound(numeric.size());
  for (size_t i = 0; i < numeric.size(); ++i) {
    bound[i] = kFdTolerance * (1.0 + std::abs(numeric[i]));
  }
  ExpectWithin(analytic, numeric, bound, what);
}

// Expects bitwise equality (used for the thread-count determinism checks).
template <typename T>
void ExpectBitwiseEqual(const std::vector<T>& a, const std::vector<T>& b,
                        const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0 && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: " << a[i] << " vs " << b[i];
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " elements differ";
}

}  // namespace pmol::testing

#endif  // PMOL_TESTS_KERNELS_KERNEL_TEST_UTIL_H_
