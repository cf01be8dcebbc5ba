// Helpers for end-to-end tests of the `pmol` command: run the binary (runfiles path
// launch/pmol) as a subprocess and capture its exit status, stdout and stderr; fresh
// scratch folders under TEST_TMPDIR; small Llama/Qwen2 configs; raw safetensors bytes
// (written by hand, not by pmol's writer, so tests can build files pmol would never write).
#ifndef PMOL_TESTS_LAUNCH_PMOL_COMMAND_H_
#define PMOL_TESTS_LAUNCH_PMOL_COMMAND_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace pmol {

struct CommandResult {
  int exit_code = -1;    // when the process exited normally
  int term_signal = 0;   // non-zero when a signal ended it (a crash or an abort)
  std::string stdout_text;
  std::string stderr_text;
  std::string command;   // for failure messages

  std::string Describe() const;  // the command, how it ended, and its output
};

// Runs argv[0] (a path relative to the runfiles root, or absolute) with argv and waits.
CommandResult RunProgram(const std::vector<std::string>& argv);

// A started program (for tests that signal it while it runs).
struct RunningProgram {
  pid_t pid = -1;
  std::string command, stdout_path, stderr_path;
};
RunningProgram StartProgram(const std::vector<std::string>& argv);
CommandResult WaitProgram(const RunningProgram& program);
// The path of launch/pmol in the runfiles (for StartProgram).
std::string PmolPath();

// Runs `launch/pmol args...` and waits for it.
CommandResult RunPmol(const std::vector<std::string>& args);

// Success when `r` exited normally (no signal) with `code`.
::testing::AssertionResult ExitedWith(const CommandResult& r, int code);

// Success when stderr contains every one of `needles`.
::testing::AssertionResult StderrMentions(const CommandResult& r,
                                          const std::vector<std::string>& needles);

// TEST_TMPDIR/<name>, emptied and created afresh.
std::string FreshDir(const std::string& name);

void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFile(const std::string& path);

// Small configs; tests change fields and call .dump().
// Llama, untied head, q/k/v/o biases, GQA 4:2, head_dim 16 != hidden/heads.
nlohmann::json LlamaConfig();
// Llama with a tied head and no biases, MHA.
nlohmann::json LlamaTiedConfig();
// Qwen2 (q/k/v biases, no o bias), tied head, GQA 4:2.
nlohmann::json Qwen2Config();
// The tiny tied Llama the training tests train: hidden 32, MLP 48, 2 layers, vocab 1024
// (room for the demo corpus's tokenizer).
nlohmann::json TinyTrainLlamaConfig();

// `pmol init-model` of `config` into `dir` (the config is first written next to it);
// fails the test (ASSERT) when the command does not succeed.
void InitModel(const nlohmann::json& config, const std::string& dir, int seed,
               const std::string& dtype = "f32");

// What the training tests train: the demo corpus (make-demo-data --seed=2) in `data` and
// TinyTrainLlamaConfig initialised with seed 5 in `model`, made once per test binary
// under FreshDir(name).
struct TrainFixture {
  std::string root, data, model;
};
const TrainFixture& SharedTrainFixture(const std::string& name);

// The PMoL adapter block those tests train: groups helpfulness (1 expert) and
// harmlessness (2 experts), one empty expert, rank 2, alpha 4, dropout 0.1.
extern const char kTinyPmolAdapter[];

// A safetensors file as bytes: 8-byte little-endian header length, `header` as JSON,
// then `data`. No padding and no checks: the header may say anything.
std::string RawSafetensors(const nlohmann::json& header, const std::string& data);

// The current test's name, for per-test folders.
std::string CurrentTestName();

}  // namespace pmol

#endif  // PMOL_TESTS_LAUNCH_PMOL_COMMAND_H_
