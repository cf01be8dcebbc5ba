// Helpers for the tests of pmol/optim: running the PyTorch oracle
// (tests/optim/torch_optim_oracle.py, through Debian's /usr/bin/python3) on a JSON job,
// and comparisons with a scale-aware tolerance.
#ifndef PMOL_TESTS_OPTIM_ORACLE_UTIL_H_
#define PMOL_TESTS_OPTIM_ORACLE_UTIL_H_

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace pmol::testing {

inline std::string TestTempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

// Runs the oracle on `job` (file names are made unique by `tag`); returns its output, or
// null after recording a failure.
inline nlohmann::json RunTorchOracle(const nlohmann::json& job, const std::string& tag) {
  const std::string in = TestTempDir() + "/" + tag + "_job.json";
  const std::string out = TestTempDir() + "/" + tag + "_out.json";
  std::ofstream(in) << job.dump();
  const std::string cmd =
      "/usr/bin/python3 tests/optim/torch_optim_oracle.py " + in + " " + out;
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "oracle failed: " << cmd;
    return nullptr;
  }
  std::ifstream f(out);
  std::stringstream ss;
  ss << f.rdbuf();
  return nlohmann::json::parse(ss.str());
}

// |got[i] - want[i]| <= tol * max(|want[i]|, mean|want|) for every i (NaN fails); the
// mean floor keeps entries that are small by cancellation from demanding more relative
// accuracy than the vector's scale carries. Returns the worst err / scale.
inline double ExpectRelClose(const std::vector<double>& got, const std::vector<double>& want,
                             double tol, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  if (got.size() != want.size()) return INFINITY;
  double floor = 0;
  for (double w : want) floor += std::fabs(w);
  floor = want.empty() ? 1.0 : floor / want.size();
  if (floor == 0) floor = 1.0;
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double rel = std::fabs(got[i] - want[i]) / std::max(std::fabs(want[i]), floor);
    if (!(rel <= tol)) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i]
                      << " (relative error " << rel << " > " << tol << ")";
      }
      worst = std::isnan(rel) ? INFINITY : std::max(worst, rel);
    } else {
      worst = std::max(worst, rel);
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements off";
  return worst;
}

}  // namespace pmol::testing

#endif  // PMOL_TESTS_OPTIM_ORACLE_UTIL_H_
