// `pmol grads` on bad input: it exits non-zero (no crash, no signal), writes no output
// file, and its message names the offending field. Each case starts from a valid run
// (which must succeed, so the failure is due to the one change) and breaks one thing:
// a preference label out of range in batch.json, a negative rank, zero groups, top_k
// larger than the slot count, an unknown target module. Beyond the stated contract (the
// prompt is non-empty; ids are token ids): an empty prompt and an id >= vocab_size.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/grads/grads_test_util.h"
#include "tests/model/model_test_util.h"

namespace pmol::grads_test {
namespace {

class GradsBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = TmpRoot() + "/bad_" + info->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    WriteRandomModel(model_.dump(), dir_ + "/model", /*seed=*/5, /*stddev=*/0.15);
    pairs_ = RandomPairs(3, 64, 2, /*seed=*/9);
  }

  std::string Config(const std::string& adapter_fields, int rank = 2) const {
    return "model { path: \"" + dir_ + "/model\" dtype: \"f64\" threads: 1 }\n"
           "adapter { kind: PMOL rank: " + std::to_string(rank) + " " + adapter_fields + " }\n"
           "objective { kind: DPO beta: 0.1 }\n";
  }

  // Runs `pmol grads` on the given config text and pairs.
  ProcessResult Grads(const std::string& config_text, const std::vector<Pair>& pairs) {
    const std::string config = dir_ + "/run.textproto", batch = dir_ + "/batch.json";
    WriteText(config, config_text);
    WriteText(batch, BatchJson(pairs).dump());
    out_ = dir_ + "/out.safetensors";
    std::filesystem::remove(out_);
    return RunProcess({"launch/pmol", "grads", "--config=" + config, "--batch=" + batch,
                       "--out=" + out_});
  }

  // Fails unless `r` exited non-zero without a signal, wrote nothing, and its stderr
  // mentions one of `needles`.
  void ExpectRejected(const ProcessResult& r, const std::vector<std::string>& needles) {
    EXPECT_EQ(r.term_signal, 0) << r.Describe();
    EXPECT_NE(r.exit_code, 0) << r.Describe();
    EXPECT_FALSE(std::filesystem::exists(out_)) << "an output was written despite the error";
    bool found = false;
    for (const std::string& n : needles) found |= r.stderr_text.find(n) != std::string::npos;
    std::string list;
    for (const std::string& n : needles) list += " '" + n + "'";
    EXPECT_TRUE(found) << "stderr mentions none of" << list << "\n" << r.Describe();
    std::printf("%s: %s", ::testing::UnitTest::GetInstance()->current_test_info()->name(), r.stderr_text.c_str());
  }

  const std::string kValid = "groups { experts: 2 } groups { experts: 1 } empty_experts: 1";
  Json model_ = {{"model_type", "llama"},   {"vocab_size", 64},       {"hidden_size", 16},
                 {"intermediate_size", 24}, {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                 {"num_key_value_heads", 2}, {"tie_word_embeddings", true},
                 {"rms_norm_eps", 1e-6}};
  std::string dir_, out_;
  std::vector<Pair> pairs_;
};

TEST_F(GradsBadInputTest, ValidRunSucceeds) {
  ProcessResult r = Grads(Config(kValid), pairs_);
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_TRUE(std::filesystem::exists(out_));
}

TEST_F(GradsBadInputTest, PreferenceOutOfRange) {
  std::vector<Pair> pairs = pairs_;
  pairs[1].preference = 2;  // two groups: 0 and 1
  ExpectRejected(Grads(Config(kValid), pairs), {"pairs[1].preference"});
}

TEST_F(GradsBadInputTest, NegativePreference) {
  std::vector<Pair> pairs = pairs_;
  pairs[2].preference = -1;
  ExpectRejected(Grads(Config(kValid), pairs), {"pairs[2].preference"});
}

TEST_F(GradsBadInputTest, NegativeRank) {
  ExpectRejected(Grads(Config(kValid, /*rank=*/-1), pairs_), {"adapter.rank"});
}

TEST_F(GradsBadInputTest, ZeroGroups) {
  ExpectRejected(Grads(Config("num_groups: 0"), pairs_), {"adapter.num_groups", "adapter.groups"});
}

TEST_F(GradsBadInputTest, TopKLargerThanSlots) {
  // 2 + 1 experts + 1 empty = 4 slots.
  ExpectRejected(Grads(Config(kValid + " top_k: 5"), pairs_), {"adapter.top_k"});
}

TEST_F(GradsBadInputTest, UnknownTargetModule) {
  ExpectRejected(Grads(Config(kValid + " target_modules: \"qq_proj\""), pairs_),
                 {"adapter.target_modules"});
}

TEST_F(GradsBadInputTest, EmptyPromptBeyondContract) {
  std::vector<Pair> pairs = pairs_;
  pairs[0].prompt.clear();
  ExpectRejected(Grads(Config(kValid), pairs), {"pairs[0].prompt"});
}

TEST_F(GradsBadInputTest, TokenIdOutOfVocabBeyondContract) {
  std::vector<Pair> pairs = pairs_;
  pairs[2].chosen.push_back(64);
  ExpectRejected(Grads(Config(kValid), pairs), {"pairs[2]"});
}

}  // namespace
}  // namespace pmol::grads_test
