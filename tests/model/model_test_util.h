// Helpers for model tests: temporary folders, random model folders written to disk,
// closeness checks with a stated tolerance, and running a Python oracle script.
#ifndef PMOL_TESTS_MODEL_MODEL_TEST_UTIL_H_
#define PMOL_TESTS_MODEL_MODEL_TEST_UTIL_H_

#include <string>
#include <vector>

namespace pmol {

// A per-test-binary scratch folder (TEST_TMPDIR under Bazel).
std::string TempDir();

// Writes dir/config.json and dir/model.safetensors (f32): matrices N(0, stddev^2), norms
// 1 + 0.1 N(0,1), biases 0.05 N(0,1), so that norms and biases are exercised too.
void WriteRandomModel(const std::string& config_json, const std::string& dir, uint64_t seed,
                      double stddev);

// max |got - want| <= tol * max(1, max |want|), reported with the worst index.
void ExpectClose(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what);

// Runs /usr/bin/python3 <script relative to the workspace> <arg>; fails the test on error.
void RunPythonOracle(const std::string& script, const std::string& arg);

}  // namespace pmol

#endif  // PMOL_TESTS_MODEL_MODEL_TEST_UTIL_H_
