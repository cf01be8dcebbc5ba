// Helpers for the `pmol grads` oracle tests: build a case's files (random model, random
// adapter with nonzero B, batch.json, run.textproto), run `launch/pmol grads` and the
// PyTorch oracle (tests/oracles/torch_pmol.py) as subprocesses, and read safetensors
// outputs as f64 vectors with their stored dtype and shape.
#ifndef PMOL_TESTS_GRADS_GRADS_TEST_UTIL_H_
#define PMOL_TESTS_GRADS_GRADS_TEST_UTIL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/launch/pmol_command.h"

namespace pmol::grads_test {

using Json = nlohmann::json;

// What one subprocess did (tests/launch/pmol_command.h), with a success shorthand.
struct ProcessResult : CommandResult {
  bool ok() const { return term_signal == 0 && exit_code == 0; }
};

// Runs argv[0] (a path relative to the runfiles root, or absolute) with argv.
ProcessResult RunProcess(const std::vector<std::string>& argv);

// One preference pair (token ids).
struct Pair {
  std::vector<int32_t> prompt, chosen, rejected;
  int preference = 0;
};
Json BatchJson(const std::vector<Pair>& pairs);

// Random pairs: prompt lengths 1..5, response lengths 1..6 (chosen and rejected differ),
// ids uniform in [0, vocab), preference i % num_preferences.
std::vector<Pair> RandomPairs(int n, int vocab, int num_preferences, uint64_t seed);

// A tensor read back from a safetensors file.
struct Stored {
  std::string dtype;  // "F32", "F64", ...
  std::vector<int64_t> shape;
  std::vector<double> values;
};
// Every tensor of the file; an empty map (and a test failure) when it cannot be read.
std::map<std::string, Stored> ReadAll(const std::string& path);

// Writes f64 (or, with f32, f32-rounded) tensors.
struct Named {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<double> values;
};
void WriteTensors(const std::string& path, const std::vector<Named>& tensors, bool f32);

void WriteText(const std::string& path, const std::string& text);
std::string TmpRoot();

}  // namespace pmol::grads_test

#endif  // PMOL_TESTS_GRADS_GRADS_TEST_UTIL_H_
