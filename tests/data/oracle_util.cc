// Test helpers for tokenizer parity (see oracle_util.h).
#include "tests/data/oracle_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"

namespace pmol::data::testing {

std::string OracleDir(std::string* why) {
  std::string dir;
  if (const char* env = std::getenv("PMOL_ORACLE_DIR"); env != nullptr && *env != '\0') {
    dir = env;
  } else if (const char* home = std::getenv("HOME"); home != nullptr) {
    dir = std::string(home) + "/.cache/pmol-oracles";
  }
  if (dir.empty() || !std::filesystem::exists(dir + "/.pmol-oracles-installed")) {
    *why = "tokenizer oracles not found in '" + dir +
           "': run `tests/data/install_oracles.sh " + (dir.empty() ? "DIR" : dir) +
           "` (or set PMOL_ORACLE_DIR to where it installed them)";
    return "";
  }
  return dir;
}

std::string TempDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return tmp != nullptr ? tmp : "/tmp";
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return "";
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

nlohmann::json RunNode(const std::string& script, const nlohmann::json& input) {
  static int counter = 0;
  const std::string base = TempDir() + "/node_" + std::to_string(counter++);
  const std::string script_path = base + ".js", input_path = base + ".json",
                    output_path = base + ".out";
  std::ofstream(script_path) << script;
  std::ofstream(input_path) << input.dump();
  const std::string command =
      "node '" + script_path + "' '" + input_path + "' > '" + output_path + "' 2> '" + base + ".err'";
  const int rc = std::system(command.c_str());
  if (rc != 0) {
    std::string err = ReadFileOrDie(base + ".err");
    if (err.size() > 2000) err = "..." + err.substr(err.size() - 2000);
    ADD_FAILURE() << "node failed (" << rc << "): " << command << "\n" << err;
    return nullptr;
  }
  nlohmann::json out = nlohmann::json::parse(ReadFileOrDie(output_path), nullptr, false);
  if (out.is_discarded()) {
    ADD_FAILURE() << "node printed invalid JSON: " << output_path;
    return nullptr;
  }
  return out;
}

bool WriteGpt2TokenizerJson(const std::string& package_dir, const std::string& out_path) {
  nlohmann::json vocab =
      nlohmann::json::parse(ReadFileOrDie(package_dir + "/encoder.json"), nullptr, false);
  if (vocab.is_discarded()) return false;
  std::istringstream bpe(ReadFileOrDie(package_dir + "/vocab.bpe"));
  nlohmann::json merges = nlohmann::json::array();
  std::string line;
  std::getline(bpe, line);  // "#version: 0.2"
  while (std::getline(bpe, line)) {
    if (!line.empty()) merges.push_back(line);
  }
  nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
      {"use_regex", true}};
  nlohmann::json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {{{"id", 50256}, {"content", "<|endoftext|>"}, {"single_word", false},
         {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
        {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
        {"merges", merges}}}};
  std::ofstream(out_path) << j.dump();
  return true;
}

std::vector<std::string> ParityCorpus(int random_count) {
  std::vector<std::string> corpus = {
      "Hello world!",
      "Hello, world! How's it going? I'm fine; they'll say we'd've DONE it.",
      "The quick brown fox jumps over the lazy dog.",
      "  leading spaces", "trailing spaces   ", "a  b   c    d", "tabs\there\t\tand\tthere",
      "line one\nline two\n\nline four\r\nwindows line\r\n", "\n\n\n", " \n ", "   ",
      "x", "",
      "def f(x):\n    return x ** 2  # square\n\nfor i in range(10):\n\tprint(f(i))\n",
      "int main() { std::vector<int> v{1, 2, 3}; return v[0] == 1 ? 0 : -1; }",
      "if (a&&b||!c) { x += 0x1F; y <<= 2; } // done",
      "1234567890 3.14159 -42 1,000,000 2024-01-15 12:30:45 1e-9 007",
      "Prices: $19.99, €5, £3.50, ¥1000, 50% off!!!",
      "emoji: 👍 👍🏽 👨‍👩‍👧 🇯🇵 ❤️ 🎉🎉🎉 😀",
      "日本語のテキストです。東京は大きい。", "中文分词测试：我爱北京天安门！", "안녕하세요, 세계!",
      "café naïve résumé façade coöperate Ångström São Paulo Zürich",
      "cafe\xCC\x81 (decomposed e + combining acute)", "ÀÉÎÕÜ àéîõü ñ ß ø œ",
      "Привет, мир! Как дела?", "مرحبا بالعالم", "नमस्ते दुनिया", "Γειά σου Κόσμε", "שלום עולם",
      "email: someone@example.com url: https://example.org/a/b?c=d&e=f#g",
      "MixedCASE camelCaseWord snake_case_word kebab-case-word UPPER",
      "'s 't 're 've 'm 'll 'd 'S 'T 'RE", "don't won't can't shouldn't",
      "...!!!???;;;:::---___***", "(((nested))) [[brackets]] {{braces}}",
      "\"quoted\" 'single' `backtick` «guillemets» „German“",
      "a\u00a0non-breaking\u2009thin\u3000ideographic space",
      "    indented four\n        indented eight\n",
      "word\n\n\n\nword", "end with newline\n", "ünïcödé wörds everywhere",
  };
  // Random strings over a mixed alphabet (fixed seed: the corpus is the same on every
  // run). U+0085 and U+FEFF are left out: JavaScript's \s disagrees with the \s of
  // Oniguruma / PCRE2 (which HF tokenizers and pmol follow) on exactly those two.
  const std::vector<std::string> alphabet = {
      "a", "b", "e", "t", "s", "T", "Q", "z", " ", " ", " ", "  ", "\n", "\t", "'", "'s",
      "0", "1", "7", "9", ".", ",", "!", "?", "-", "_", "(", ")", "{", "}", "#", "@", "\"",
      "é", "ü", "ß", "日", "本", "語", "中", "文", "한", "😀", "👍", "🏽", "‍", "Ж", "д",
      "α", "ب", "न", "€", "™", "\u00a0", "\r\n", "ing", "the", "tion", "  x",
  };
  std::mt19937 rng(20240611);
  for (int i = 0; i < random_count; ++i) {
    const int length = 1 + static_cast<int>(rng() % 40);
    std::string s;
    for (int k = 0; k < length; ++k) s += alphabet[rng() % alphabet.size()];
    corpus.push_back(s);
  }
  return corpus;
}

}  // namespace pmol::data::testing
