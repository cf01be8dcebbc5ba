// Tests of the demo corpus (pmol make-demo-data) and of `pmol tokenize`'s line tool.
// Oracles: byte equality of two runs with the same seed (determinism); the corpus
// loads with zero bad lines through the real data pipeline; its tokenizer.json is
// loaded by an independent implementation (@lenml/tokenizers via Node.js, needs
// tests/data/install_oracles.sh) and gives exactly the same ids on the corpus text;
// the preference conflicts of demo_corpus.h are present (checked by category).
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "pmol/data/demo_corpus.h"
#include "pmol/data/preference_dataset.h"
#include "pmol/data/tokenize_tool.h"
#include "pmol/data/tokenizer.h"
#include "tests/data/oracle_util.h"

namespace pmol::data {
namespace {

namespace fs = std::filesystem;
using testing::ReadFileOrDie;
using testing::TempDir;

std::map<std::string, std::string> ReadTree(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) {
      files[fs::relative(entry.path(), dir).string()] = ReadFileOrDie(entry.path().string());
    }
  }
  return files;
}

class DemoCorpusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = TempDir() + "/demo_a";
    DemoCorpusOptions options;
    options.seed = 11;
    ASSERT_TRUE(WriteDemoCorpus(dir_, options).ok());
  }
  static std::string dir_;
};
std::string DemoCorpusTest::dir_;

TEST_F(DemoCorpusTest, SameSeedSameBytesOtherSeedOtherData) {
  DemoCorpusOptions options;
  options.seed = 11;
  const std::string again = TempDir() + "/demo_b";
  ASSERT_TRUE(WriteDemoCorpus(again, options).ok());
  const auto a = ReadTree(dir_), b = ReadTree(again);
  EXPECT_EQ(a.size(), 11u);  // 2 tokenizer files, manifest, 2 SFT, 6 preference
  EXPECT_TRUE(a == b);
  options.seed = 12;
  const std::string other = TempDir() + "/demo_c";
  ASSERT_TRUE(WriteDemoCorpus(other, options).ok());
  EXPECT_NE(ReadTree(other).at("preference/empathy/train.jsonl"),
            a.at("preference/empathy/train.jsonl"));
}

TEST_F(DemoCorpusTest, LoadsCleanlyThroughThePipeline) {
  auto tok = Tokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_LE((*tok)->vocab_size(), 1024);
  EXPECT_EQ((*tok)->eos_id(), (*tok)->TokenToId("<|im_end|>"));
  EXPECT_EQ((*tok)->pad_id(), (*tok)->TokenToId("<|endoftext|>"));
  DataOptions o;
  o.preference_names = {"helpfulness", "harmlessness", "empathy"};
  for (const char* p : {"helpfulness", "harmlessness", "empathy"}) {
    o.sources.push_back({dir_ + "/preference/" + p + "/train.jsonl", DataFormat::kMessages, p, 1.0});
  }
  o.max_length = 256;
  o.max_prompt_length = 128;
  o.on_bad_input = BadInputPolicy::kFail;
  auto ds = LoadPreferenceDataset(o, **tok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_GT(ds->pairs.size(), 3000u);
  EXPECT_EQ(ds->truncated, 0);
  // Tokens per pair stay small enough for a tiny model.
  size_t longest = 0;
  for (const TokenizedPair& p : ds->pairs) {
    longest = std::max(longest, p.prompt.size() + std::max(p.chosen.size(), p.rejected.size()));
  }
  EXPECT_LT(longest, 192u);
}

TEST_F(DemoCorpusTest, PreferencesConflictOnHarmfulAndEmotionalPrompts) {
  // For a harmful request, helpfulness's chosen reply is harmlessness's rejected one.
  auto first_of = [&](const std::string& pref, const std::string& category) {
    std::istringstream in(ReadFileOrDie(dir_ + "/preference/" + pref + "/train.jsonl"));
    std::string line;
    std::vector<nlohmann::json> rows;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (j["category"] == category) rows.push_back(j);
    }
    return rows;
  };
  std::set<std::string> helpful_chosen, harmless_rejected, harmless_chosen, empathy_chosen,
      helpful_rejected;
  auto intersect = [](const std::set<std::string>& a, const std::set<std::string>& b) {
    size_t n = 0;
    for (const std::string& s : a) n += b.count(s);
    return n;
  };
  for (const auto& j : first_of("helpfulness", "harmful_request")) {
    helpful_chosen.insert(j["chosen"][0]["content"].get<std::string>());
  }
  for (const auto& j : first_of("harmlessness", "harmful_request")) {
    harmless_rejected.insert(j["rejected"][0]["content"].get<std::string>());
    harmless_chosen.insert(j["chosen"][0]["content"].get<std::string>());
  }
  EXPECT_FALSE(helpful_chosen.empty());
  EXPECT_GT(intersect(helpful_chosen, harmless_rejected), 0u);
  EXPECT_EQ(intersect(helpful_chosen, harmless_chosen), 0u);
  for (const auto& j : first_of("helpfulness", "emotional")) {
    helpful_rejected.insert(j["rejected"][0]["content"].get<std::string>());
  }
  for (const auto& j : first_of("empathy", "emotional")) {
    empathy_chosen.insert(j["chosen"][0]["content"].get<std::string>());
  }
  EXPECT_FALSE(empathy_chosen.empty());
  EXPECT_GT(intersect(helpful_rejected, empathy_chosen), 0u);
  // Eval prompts never appear in train.
  std::set<std::string> train_prompts;
  std::istringstream train(ReadFileOrDie(dir_ + "/preference/empathy/train.jsonl"));
  std::string line;
  while (std::getline(train, line)) train_prompts.insert(nlohmann::json::parse(line)["prompt"].dump());
  std::istringstream eval(ReadFileOrDie(dir_ + "/preference/empathy/eval.jsonl"));
  int eval_count = 0;
  while (std::getline(eval, line)) {
    ++eval_count;
    EXPECT_EQ(train_prompts.count(nlohmann::json::parse(line)["prompt"].dump()), 0u);
  }
  EXPECT_GT(eval_count, 0);
}

TEST_F(DemoCorpusTest, IndependentImplementationLoadsTheTokenizer) {
  std::string why;
  const std::string oracles = testing::OracleDir(&why);
  if (oracles.empty()) GTEST_FAIL() << why;
  std::vector<std::string> texts;
  std::istringstream in(ReadFileOrDie(dir_ + "/sft/train.jsonl"));
  std::string line;
  while (std::getline(in, line) && texts.size() < 200) {
    const nlohmann::json row = nlohmann::json::parse(line);
    for (const auto& m : row["messages"]) {
      texts.push_back("<|im_start|>" + m["role"].get<std::string>() + "\n" +
                      m["content"].get<std::string>() + "<|im_end|>\n");
    }
  }
  texts.push_back("Unseen words: zebra quokka 日本 😀");
  const char kScript[] = R"JS(
const fs = require('fs');
const input = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { TokenizerLoader } = require(input.lib);
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(input.dir + '/tokenizer.json', 'utf8')),
  tokenizerConfig: JSON.parse(fs.readFileSync(input.dir + '/tokenizer_config.json', 'utf8')),
});
process.stdout.write(JSON.stringify(input.texts.map(
    t => Array.from(tok.encode(t, {add_special_tokens: false})))));
)JS";
  const nlohmann::json out = testing::RunNode(
      kScript, {{"lib", oracles + "/node_modules/@lenml/tokenizers"}, {"dir", dir_}, {"texts", texts}});
  ASSERT_TRUE(out.is_array());
  auto tok = Tokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ((*tok)->Encode(texts[i], false), out[i].get<std::vector<int32_t>>()) << texts[i];
  }
}

TEST_F(DemoCorpusTest, TokenizeToolEncodesAndDecodesLineByLine) {
  auto tok = Tokenizer::Load(dir_);
  ASSERT_TRUE(tok.ok());
  std::istringstream text("How do I boil an egg?\n\nI feel lonely.");
  std::ostringstream ids;
  ASSERT_TRUE(TokenizeLines(**tok, text, ids, false, false, "--text").ok());
  std::istringstream lines(ids.str());
  std::string l1, l2, l3;
  std::getline(lines, l1);
  std::getline(lines, l2);
  std::getline(lines, l3);
  EXPECT_FALSE(l1.empty());
  EXPECT_TRUE(l2.empty());  // an empty line stays an empty line
  std::istringstream back(ids.str());
  std::ostringstream decoded;
  ASSERT_TRUE(TokenizeLines(**tok, back, decoded, true, false, "ids").ok());
  EXPECT_EQ(decoded.str(), "How do I boil an egg?\n\nI feel lonely.\n");
  std::istringstream bad("12 x7");
  std::ostringstream sink;
  const absl::Status s = TokenizeLines(**tok, bad, sink, true, false, "ids.txt");
  EXPECT_NE(s.message().find("ids.txt:1: 'x7' is not a token id"), std::string::npos) << s;
}

}  // namespace
}  // namespace pmol::data
