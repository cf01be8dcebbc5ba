// Helpers for the objectives tests: the f64 CPU backend, seeded random values, central
// finite differences in double precision, and closeness checks with a stated tolerance.
//
// Finite differences: dL/dx_i ~= (L(x + h e_i) - L(x - h e_i)) / (2h), h = 1e-6. The
// losses here are smooth, O(1) functions of O(0.1 .. 1) inputs: truncation error
// h^2/6 |L'''| <= ~1e-9 (the largest third derivatives are those of log s for router
// masses s >= ~0.02: 2/s^3 h^2/6 ~ 1e-8 at worst), and roundoff ~ 2^-53 |L| / h ~ 1e-10.
// kFdTolerance = 1e-7 relative (scaled by max(1, |grad|)) sits an order of magnitude above
// that noise and many orders below the O(1e-2 .. 1) error of a wrong term, sign or factor.
#ifndef PMOL_TESTS_OBJECTIVES_OBJECTIVES_TEST_UTIL_H_
#define PMOL_TESTS_OBJECTIVES_OBJECTIVES_TEST_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace pmol::testing {

inline constexpr double kFdStep = 1e-6;
inline constexpr double kFdTolerance = 1e-7;

inline Backend* Cpu() { return GetBackend(DeviceType::kCpu, 1).value(); }

inline std::vector<double> Uniform(std::mt19937& rng, size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

inline std::vector<double> Normal(std::mt19937& rng, size_t n, double stddev = 1.0) {
  std::normal_distribution<double> dist(0.0, stddev);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Central-difference gradient of f at x, for the coordinates in `which` (all if empty).
inline std::vector<double> NumericGradient(const std::function<double(const std::vector<double>&)>& f,
                                           std::vector<double> x, std::vector<size_t> which = {}) {
  if (which.empty())
    for (size_t i = 0; i < x.size(); ++i) which.push_back(i);
  std::vector<double> g(x.size(), 0.0);
  for (size_t i : which) {
    const double x0 = x[i];
    const double xp = x0 + kFdStep, xm = x0 - kFdStep;
    x[i] = xp;
    const double fp = f(x);
    x[i] = xm;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (xp - xm);
  }
  return g;
}

// |got_i - want_i| <= tol * max(1, |want_i|) for every i.
inline void ExpectNear(const std::vector<double>& got, const std::vector<double>& want, double tol,
                       const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]), tol * std::max(1.0, std::abs(want[i])))
        << what << " [" << i << "]: got " << got[i] << " want " << want[i];
  }
}

// max |got - want| <= tol * max(1, max |want|): a relative check at the scale of the
// whole vector (for oracle comparisons where tiny entries carry absolute roundoff).
inline void ExpectCloseScaled(const std::vector<double>& got, const std::vector<double>& want,
                              double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::abs(got[i] - want[i]), tol * scale)
        << what << " [" << i << "]: got " << got[i] << " want " << want[i];
  }
}

// Runs /usr/bin/python3 <script (workspace-relative)> <arg>; fails the test on error.
inline void RunPythonOracle(const std::string& script, const std::string& arg) {
  const std::string cmd = "/usr/bin/python3 " + script + " " + arg;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "oracle failed: " << cmd;
}

inline std::string TempDir() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

}  // namespace pmol::testing

#endif  // PMOL_TESTS_OBJECTIVES_OBJECTIVES_TEST_UTIL_H_
