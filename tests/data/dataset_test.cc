// Tests of preference-data loading, truncation, masks, batching and sampling.
// Oracles: hand-written inputs with hand-derived expected values (exact equality);
// sampler properties (each item once per epoch, disjoint shards, exact resume, mix
// shares within rounding of 1 item) checked against their definitions in sampler.h.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "pmol/data/batching.h"
#include "pmol/data/bpe_trainer.h"
#include "pmol/data/preference_dataset.h"
#include "pmol/data/sampler.h"
#include "pmol/data/tokenizer.h"
#include "pmol/data/truncation.h"

namespace pmol::data {
namespace {

std::unique_ptr<Tokenizer> SmallTokenizer() {
  BpeTrainerOptions options;
  options.vocab_size = 400;
  options.special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  const nlohmann::json j = TrainByteLevelBpe(
      {"hello there how are you", "the answer is yes", "no thanks", "user assistant system"},
      options);
  nlohmann::json config = {{"eos_token", "<|endoftext|>"}, {"pad_token", "<|endoftext|>"}};
  return std::move(Tokenizer::FromJson(j, config, "small").value());
}

std::string WriteFile(const std::string& name, const std::string& content) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/" + name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

DataOptions BaseOptions(const std::string& path) {
  DataOptions o;
  o.preference_names = {"helpfulness", "harmlessness", "empathy"};
  o.sources.push_back({path, DataFormat::kAuto, "", 1.0});
  o.max_length = 64;
  o.max_prompt_length = 32;
  return o;
}

TEST(DataOptions, ValidationNamesTheField) {
  DataOptions o = BaseOptions("x.jsonl");
  EXPECT_TRUE(ValidateDataOptions(o).ok());
  o.max_prompt_length = 64;
  EXPECT_NE(ValidateDataOptions(o).message().find("data.max_prompt_length"), std::string::npos);
  o = BaseOptions("x.jsonl");
  o.sources[0].preference = "speed";
  EXPECT_NE(ValidateDataOptions(o).message().find("data.sources[0].preference"), std::string::npos);
  o = BaseOptions("x.jsonl");
  o.chat_template = "jinja";
  EXPECT_NE(ValidateDataOptions(o).message().find("data.chat_template"), std::string::npos);
  o = BaseOptions("x.jsonl");
  o.preference_names = {"a", "a"};
  EXPECT_NE(ValidateDataOptions(o).message().find("duplicate"), std::string::npos);
  o = BaseOptions("x.jsonl");
  o.sources[0].mix_weight = -1;
  EXPECT_FALSE(ValidateDataOptions(o).ok());
}

// One good line of each format, then one line per bad-input reason.
const char kMixedFile[] =
    R"({"prompt": "hello there", "chosen": "yes", "rejected": "no", "preference": "helpfulness"})" "\n"
    R"({"chosen": "\n\nHuman: how are you\n\nAssistant: fine thanks", "rejected": "\n\nHuman: how are you\n\nAssistant: no", "preference": 1})" "\n"
    R"({"prompt": [{"role": "user", "content": "hello"}], "chosen": [{"role": "assistant", "content": "yes"}], "rejected": {"role": "assistant", "content": "no"}, "preference": "empathy"})" "\n"
    "\n"
    "{not json\n"
    "{\"prompt\": \"bad \xFF utf8\", \"chosen\": \"a\", \"rejected\": \"b\", \"preference\": 0}\n"
    R"({"prompt": "p", "rejected": "b", "preference": 0})" "\n"
    R"({"prompt": "p", "chosen": "   ", "rejected": "b", "preference": 0})" "\n"
    R"({"prompt": "p", "chosen": "same", "rejected": "same", "preference": 0})" "\n"
    R"({"prompt": "p", "chosen": "a", "rejected": "b", "preference": "speed"})" "\n"
    R"({"prompt": "p", "chosen": "a", "rejected": "b", "preference": 7})" "\n"
    R"({"chosen": "\n\nHuman: x\n\nAssistant: a", "rejected": "\n\nHuman: y\n\nAssistant: b", "preference": 0})" "\n"
    R"({"prompt": [{"role": "robot", "content": "x"}], "chosen": {"role": "assistant", "content": "a"}, "rejected": {"role": "assistant", "content": "b"}, "preference": 0})" "\n"
    R"({"prompt": "p", "chosen": "a", "rejected": "b"})" "\n";

TEST(PreferenceDataset, ParsesFormatsAndCountsEveryBadInput) {
  auto tok = SmallTokenizer();
  DataOptions o = BaseOptions(WriteFile("mixed.jsonl", kMixedFile));
  auto ds = LoadPreferenceDataset(o, *tok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->pairs.size(), 3u);
  const int32_t eos = *tok->eos_id();
  // fields: prompt text, responses + EOS.
  EXPECT_EQ(ds->pairs[0].prompt, tok->Encode("hello there", false));
  std::vector<int32_t> yes = tok->Encode("yes", false);
  yes.push_back(eos);
  EXPECT_EQ(ds->pairs[0].chosen, yes);
  EXPECT_EQ(ds->pairs[0].preference, 0);
  EXPECT_EQ(ds->pairs[0].line, 1);
  // HH-RLHF: the prompt ends with the last "\n\nAssistant:".
  EXPECT_EQ(ds->pairs[1].prompt, tok->Encode("\n\nHuman: how are you\n\nAssistant:", false));
  std::vector<int32_t> fine = tok->Encode(" fine thanks", false);
  fine.push_back(eos);
  EXPECT_EQ(ds->pairs[1].chosen, fine);
  EXPECT_EQ(ds->pairs[1].preference, 1);
  // messages + chatml: the template's own end marker, no extra EOS.
  EXPECT_EQ(ds->pairs[2].prompt,
            tok->Encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", false));
  EXPECT_EQ(ds->pairs[2].chosen, tok->Encode("yes<|im_end|>", false));
  EXPECT_EQ(ds->pairs[2].preference, 2);

  const BadInputReport& r = ds->bad_input;
  EXPECT_EQ(r.count(BadInputReason::kInvalidJson), 1);
  EXPECT_EQ(r.count(BadInputReason::kInvalidUtf8), 1);
  EXPECT_EQ(r.count(BadInputReason::kMissingField), 2);  // no chosen; no preference
  EXPECT_EQ(r.count(BadInputReason::kEmptyResponse), 1);
  EXPECT_EQ(r.count(BadInputReason::kIdenticalResponses), 1);
  EXPECT_EQ(r.count(BadInputReason::kUnknownPreference), 2);
  EXPECT_EQ(r.count(BadInputReason::kMalformed), 2);  // HH prompt mismatch; bad role
  EXPECT_EQ(r.total(), 10);
  EXPECT_NE(r.first_message(BadInputReason::kInvalidJson).find("mixed.jsonl:5: invalid JSON"),
            std::string::npos);
  EXPECT_NE(r.first_message(BadInputReason::kInvalidUtf8).find("mixed.jsonl:6: invalid UTF-8"),
            std::string::npos);
  const std::string summary = ds->Summary();
  EXPECT_NE(summary.find("kept 3 pairs, skipped 10"), std::string::npos) << summary;
}

TEST(PreferenceDataset, FailPolicyStopsAtTheFirstBadLineWithFileAndLine) {
  auto tok = SmallTokenizer();
  DataOptions o = BaseOptions(WriteFile("mixed_fail.jsonl", kMixedFile));
  o.on_bad_input = BadInputPolicy::kFail;
  auto ds = LoadPreferenceDataset(o, *tok);
  ASSERT_FALSE(ds.ok());
  EXPECT_NE(ds.status().message().find("mixed_fail.jsonl:5: invalid JSON"), std::string::npos)
      << ds.status();
  o.sources[0].path = "/nonexistent.jsonl";
  EXPECT_NE(LoadPreferenceDataset(o, *tok).status().message().find("/nonexistent.jsonl"),
            std::string::npos);
}

TEST(PreferenceDataset, SourceTagOverridesAndOverlongPolicy) {
  auto tok = SmallTokenizer();
  std::string long_reply(300, 'x');
  const std::string path = WriteFile(
      "tagged.jsonl", R"({"prompt": "hello", "chosen": "yes", "rejected": "no"})" "\n"
                      "{\"prompt\": \"hello\", \"chosen\": \"" + long_reply +
                          "\", \"rejected\": \"no\"}\n");
  DataOptions o = BaseOptions(path);
  o.sources[0].preference = "empathy";
  o.truncate_responses = false;
  auto ds = LoadPreferenceDataset(o, *tok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->pairs.size(), 1u);
  EXPECT_EQ(ds->pairs[0].preference, 2);
  EXPECT_EQ(ds->bad_input.count(BadInputReason::kOverlong), 1);
  o.truncate_responses = true;
  ds = LoadPreferenceDataset(o, *tok);
  ASSERT_TRUE(ds.ok());
  ASSERT_EQ(ds->pairs.size(), 2u);
  EXPECT_EQ(ds->truncated, 1);
  EXPECT_LE(ds->pairs[1].prompt.size() + ds->pairs[1].chosen.size(), 64u);
}

TEST(PreferenceDataset, UnpairedSupervisedLines) {
  auto tok = SmallTokenizer();
  const std::string path = WriteFile(
      "sft.jsonl",
      R"({"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "the answer is yes"}]})" "\n"
      R"({"prompt": "how are you", "chosen": "no thanks"})" "\n"
      R"({"messages": [{"role": "user", "content": "hello"}]})" "\n"
      R"({"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": " "}]})" "\n");
  DataOptions o = BaseOptions(path);
  o.unpaired = true;
  auto ds = LoadPreferenceDataset(o, *tok);
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->pairs.size(), 2u);
  // The conversation's prompt is rendered by the template; the reply is the chosen one
  // and its own rejected copy; no label means preference 0.
  for (const TokenizedPair& p : ds->pairs) {
    EXPECT_EQ(p.chosen, p.rejected);
    EXPECT_EQ(p.preference, 0);
  }
  const std::string reply = tok->Decode(ds->pairs[0].chosen, false);
  EXPECT_NE(reply.find("the answer is yes"), std::string::npos) << reply;
  EXPECT_NE(tok->Decode(ds->pairs[0].prompt, false).find("hello there"), std::string::npos);
  EXPECT_EQ(tok->Decode(ds->pairs[0].prompt, false).find("the answer"), std::string::npos);
  EXPECT_EQ(ds->bad_input.count(BadInputReason::kMalformed), 1);      // no assistant reply
  EXPECT_EQ(ds->bad_input.count(BadInputReason::kEmptyResponse), 1);  // blank reply
  // Without `unpaired` the same file is all bad input (no rejected reply).
  o.unpaired = false;
  ds = LoadPreferenceDataset(o, *tok);
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(ds->pairs.size(), 0u);
}

TEST(Truncation, SameRuleForChosenAndRejected) {
  DataOptions o;
  o.max_length = 10;
  o.max_prompt_length = 4;
  std::vector<int32_t> prompt = {100, 1, 2, 3, 4, 5, 6}, chosen = {10, 11, 12, 13, 14, 15, 16, 17},
                       rejected = {20, 21};
  // keep_end with BOS (100) protected: BOS + the last 3 prompt ids; budget 6.
  EXPECT_EQ(TruncatePair(o, 1, &prompt, &chosen, &rejected), TruncationResult::kTruncated);
  EXPECT_EQ(prompt, (std::vector<int32_t>{100, 4, 5, 6}));
  EXPECT_EQ(chosen, (std::vector<int32_t>{10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(rejected, (std::vector<int32_t>{20, 21}));

  o.prompt_truncation = PromptTruncation::kKeepStart;
  prompt = {100, 1, 2, 3, 4, 5, 6};
  chosen = {10};
  rejected = {20};
  EXPECT_EQ(TruncatePair(o, 1, &prompt, &chosen, &rejected), TruncationResult::kTruncated);
  EXPECT_EQ(prompt, (std::vector<int32_t>{100, 1, 2, 3}));

  prompt = {1, 2};
  chosen = {3};
  rejected = {4, 5};
  EXPECT_EQ(TruncatePair(o, 0, &prompt, &chosen, &rejected), TruncationResult::kUnchanged);

  o.truncate_responses = false;
  chosen.assign(9, 7);
  EXPECT_EQ(TruncatePair(o, 0, &prompt, &chosen, &rejected), TruncationResult::kOverlong);
}

PreferenceDataset HandDataset() {
  PreferenceDataset ds;
  // Pair k: prompt of k+1 ids, chosen of 2 ids, rejected of 1 id.
  for (int k = 0; k < 5; ++k) {
    TokenizedPair p;
    p.prompt.assign(k + 1, 50 + k);
    p.chosen = {10 + k, 11 + k};
    p.rejected = {20 + k};
    p.preference = k % 3;
    ds.pairs.push_back(p);
  }
  ds.source_sizes = {5};
  ds.mix_weights = {1.0};
  return ds;
}

TEST(Batching, RightPaddingAndResponseMasks) {
  const PreferenceDataset ds = HandDataset();
  const PreferenceBatch b = MakePaddedBatch(ds, {1, 0}, /*rows=*/3, /*seq_len=*/6, /*pad_id=*/0);
  ASSERT_EQ(b.num_pairs, 2);
  // Row 0 = pair 1: prompt [51 51], chosen [11 12] -> 51 51 11 12 0 0.
  EXPECT_EQ(std::vector<int32_t>(b.chosen.input_ids.begin(), b.chosen.input_ids.begin() + 6),
            (std::vector<int32_t>{51, 51, 11, 12, 0, 0}));
  EXPECT_EQ(std::vector<uint8_t>(b.chosen.response_mask.begin(), b.chosen.response_mask.begin() + 6),
            (std::vector<uint8_t>{0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(std::vector<uint8_t>(b.chosen.attention_mask.begin(), b.chosen.attention_mask.begin() + 6),
            (std::vector<uint8_t>{1, 1, 1, 1, 0, 0}));
  // Rejected row 1 = pair 0: 50 20 0 0 0 0, mask 0 1 0 0 0 0.
  EXPECT_EQ(std::vector<int32_t>(b.rejected.input_ids.begin() + 6, b.rejected.input_ids.begin() + 12),
            (std::vector<int32_t>{50, 20, 0, 0, 0, 0}));
  EXPECT_EQ(std::vector<uint8_t>(b.rejected.response_mask.begin() + 6,
                                 b.rejected.response_mask.begin() + 12),
            (std::vector<uint8_t>{0, 1, 0, 0, 0, 0}));
  // Row 2 is an empty padding row.
  EXPECT_TRUE(std::all_of(b.chosen.attention_mask.begin() + 12, b.chosen.attention_mask.end(),
                          [](uint8_t v) { return v == 0; }));
  EXPECT_EQ(b.preference, (std::vector<int32_t>{1, 0}));
}

TEST(Batching, PackingPlacesPairsInTheSameRowAndSegment) {
  const PreferenceDataset ds = HandDataset();
  DataOptions o;
  o.micro_batch_size = 2;
  o.max_length = 8;
  o.packing = true;
  o.shuffle = false;
  Sampler sampler({5}, {1.0}, 0, /*shuffle=*/false, 1, 0, 1);
  PreferenceBatcher batcher(ds, o, &sampler, 0);
  const PreferenceBatch b = batcher.Next();
  // Chosen lengths 3,4,5,6,7; rejected 2,3,4,5,6; rows of 8, first fit:
  // pair0 -> row0 (3/2), pair1 -> row0? 3+4=7 <= 8 and 2+3=5: yes (segment 1);
  // pair2 -> row1 (5/4); pair3 (6/5) fits nowhere -> batch closes with 3 pairs.
  EXPECT_EQ(b.num_pairs, 3);
  EXPECT_EQ(b.pair_row, (std::vector<int32_t>{0, 0, 1}));
  EXPECT_EQ(b.pair_segment, (std::vector<int32_t>{0, 1, 0}));
  // Row 0 chosen: 50 10 11 | 51 51 11 12 | pad; positions restart per segment.
  EXPECT_EQ(std::vector<int32_t>(b.chosen.input_ids.begin(), b.chosen.input_ids.begin() + 8),
            (std::vector<int32_t>{50, 10, 11, 51, 51, 11, 12, 0}));
  EXPECT_EQ(std::vector<int32_t>(b.chosen.position_ids.begin(), b.chosen.position_ids.begin() + 8),
            (std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3, 0}));
  EXPECT_EQ(std::vector<int32_t>(b.chosen.segment_ids.begin(), b.chosen.segment_ids.begin() + 8),
            (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1, -1}));
  EXPECT_EQ(std::vector<uint8_t>(b.chosen.response_mask.begin(), b.chosen.response_mask.begin() + 8),
            (std::vector<uint8_t>{0, 1, 1, 0, 0, 1, 1, 0}));
  // The unplaced pair 3 was not consumed: the next batch starts with it.
  const PreferenceBatch next = batcher.Next();
  EXPECT_EQ(next.pair_index.front(), 3);
}

TEST(Sampler, EachItemOncePerEpochAndDeterministic) {
  Sampler a({7, 5}, {1.0, 1.0}, 0, true, 42, 0, 1);
  Sampler b({7, 5}, {1.0, 1.0}, 0, true, 42, 0, 1);
  std::vector<int64_t> epoch;
  for (int i = 0; i < 12; ++i) {
    epoch.push_back(a.Next());
    EXPECT_EQ(epoch.back(), b.Next());
  }
  // Equal weights, N = 12: 6 from each source; source 0 (7 items) shows 6 distinct.
  std::map<int, int> per_source;
  for (int64_t id : epoch) ++per_source[id < 7 ? 0 : 1];
  EXPECT_EQ(per_source[0], 6);
  EXPECT_EQ(per_source[1], 6);
  // Source 1 has 5 items for 6 slots: one of them repeats, nothing else does.
  EXPECT_EQ(std::set<int64_t>(epoch.begin(), epoch.end()).size(), 11u);
  // Weights proportional to the sizes: every item exactly once per epoch.
  Sampler proportional({7, 5}, {7.0, 5.0}, 0, true, 42, 0, 1);
  const std::vector<int64_t> once = proportional.EpochOrder(3);
  EXPECT_EQ(std::set<int64_t>(once.begin(), once.end()).size(), 12u);
  Sampler c({7, 5}, {1.0, 1.0}, 0, true, 43, 0, 1);
  std::vector<int64_t> other;
  for (int i = 0; i < 12; ++i) other.push_back(c.Next());
  EXPECT_NE(epoch, other);  // another seed, another order
}

TEST(Sampler, MixWeightsSetTheShares) {
  // 1:3 weights over 1000 samples -> 250 and 750 (the small source repeats).
  Sampler s({10, 1000}, {1.0, 3.0}, 1000, true, 7, 0, 1);
  const std::vector<int64_t> order = s.EpochOrder(0);
  const int64_t from_small = std::count_if(order.begin(), order.end(), [](int64_t id) { return id < 10; });
  EXPECT_EQ(from_small, 250);
  // Up-sampled: every one of the 10 items appears 25 times.
  std::map<int64_t, int> counts;
  for (int64_t id : order) if (id < 10) ++counts[id];
  for (const auto& [id, n] : counts) EXPECT_EQ(n, 25) << id;
}

TEST(Sampler, ShardsAreDisjointAndCoverTheEpoch) {
  const int world = 3;
  std::vector<int64_t> all;
  for (int rank = 0; rank < world; ++rank) {
    Sampler s({20}, {1.0}, 0, true, 5, rank, world);
    EXPECT_EQ(s.steps_per_epoch(), 6);  // floor(20 / 3)
    for (int i = 0; i < 6; ++i) all.push_back(s.Next());
  }
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 18u);
}

TEST(Sampler, ResumesExactlyAcrossEpochs) {
  Sampler full({9, 4}, {2.0, 1.0}, 0, true, 99, 1, 2);
  std::vector<int64_t> expected;
  SamplerState saved;
  for (int i = 0; i < 40; ++i) {
    if (i == 17) saved = full.state();
    expected.push_back(full.Next());
  }
  Sampler resumed({9, 4}, {2.0, 1.0}, 0, true, 99, 1, 2);
  ASSERT_TRUE(resumed.Restore(saved).ok());
  for (int i = 17; i < 40; ++i) EXPECT_EQ(resumed.Next(), expected[i]) << i;
  Sampler other_world({9, 4}, {2.0, 1.0}, 0, true, 99, 0, 4);
  EXPECT_FALSE(other_world.Restore({0, 2}).ok());  // 2 is not a multiple of 4 ranks
}

}  // namespace
}  // namespace pmol::data
