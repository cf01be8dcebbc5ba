// Test helpers for the tokenizer parity tests: where the npm oracles live, running a
// Node.js script and reading its JSON output, building GPT-2's tokenizer.json from
// the oracle package's encoder.json + vocab.bpe, and a varied test corpus.
#ifndef PMOL_TESTS_DATA_ORACLE_UTIL_H_
#define PMOL_TESTS_DATA_ORACLE_UTIL_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace pmol::data::testing {

// $PMOL_ORACLE_DIR, else $HOME/.cache/pmol-oracles. Returns "" (and sets *why) when
// the oracles are not installed there.
std::string OracleDir(std::string* why);

// A scratch directory for this test ($TEST_TMPDIR or /tmp).
std::string TempDir();

// Writes `script` and `input` (as JSON) to the temp dir, runs `node script input`,
// and parses its stdout as JSON. Fails the current test (ADD_FAILURE) on error and
// returns null.
nlohmann::json RunNode(const std::string& script, const nlohmann::json& input);

// Builds GPT-2's tokenizer.json (as HF ships it) from encoder.json and vocab.bpe in
// `package_dir` and writes it to `out_path`.
bool WriteGpt2TokenizerJson(const std::string& package_dir, const std::string& out_path);

// English, code, numbers, whitespace runs, emoji, CJK, accents, other scripts, plus
// `random_count` random strings drawn from those alphabets (fixed seed).
std::vector<std::string> ParityCorpus(int random_count);

std::string ReadFileOrDie(const std::string& path);

}  // namespace pmol::data::testing

#endif  // PMOL_TESTS_DATA_ORACLE_UTIL_H_
