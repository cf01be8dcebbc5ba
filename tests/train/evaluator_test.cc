// EvaluateDataset and eval.json, on a tiny f64 model. The oracle for merging is one
// forward-only step over a batch holding every pair (PreferenceStep::Evaluate, itself
// checked against Run in preference_step_test): any micro-batch size must give its
// figures to 1e-12, under the same names (StepMetrics::Named). Also: max_pairs, labels
// beyond the expert groups (LoRA), cached reference log-probs, full fine-tuning with a
// precomputed reference (untrained: every margin 0, DPO loss log 2), JSON round trips
// (NaN as null) and errors that name the pair or the field.
#include "pmol/train/evaluator.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/model/model_test_util.h"
#include "tests/train/train_test_util.h"

namespace pmol {
namespace {

std::vector<double> Flatten(const EvalResult& r) {
  std::vector<double> v = {r.loss, r.main, r.group, r.balance, double(r.pairs), double(r.tokens)};
  auto split = [&](const EvalSplit& s) {
    for (double x : {double(s.pairs), s.loss, s.accuracy, s.margin, s.reward_chosen,
                     s.reward_rejected, double(s.router_positions)})
      v.push_back(x);
    v.insert(v.end(), s.router_mass.begin(), s.router_mass.end());
    for (const auto& row : s.router_mass_by_layer) v.insert(v.end(), row.begin(), row.end());
  };
  for (const EvalSplit& s : r.preferences) split(s);
  split(r.overall);
  for (int64_t l : r.router_layers) v.push_back(double(l));
  return v;
}

// Equal with NaN == NaN (the NaNs of an SFT result or of an empty split).
void ExpectSame(const std::vector<double>& got, const std::vector<double>& want, double tol,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  std::vector<double> g, w;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(std::isnan(got[i]), std::isnan(want[i])) << what << " at " << i;
    if (std::isnan(got[i]) || std::isnan(want[i])) continue;
    g.push_back(got[i]);
    w.push_back(want[i]);
  }
  ExpectClose(g, w, tol, what);
}

void ExpectSameNamed(const std::map<std::string, double>& got,
                     const std::map<std::string, double>& want, const std::string& what) {
  std::vector<std::string> got_keys, want_keys;
  std::vector<double> g, w;
  for (const auto& [k, v] : got) got_keys.push_back(k), g.push_back(v);
  for (const auto& [k, v] : want) want_keys.push_back(k), w.push_back(v);
  ASSERT_EQ(got_keys, want_keys) << what;
  ExpectClose(g, w, 1e-12, what);
}

EvalResult Evaluate(RunComponents& run, const data::PreferenceDataset& ds, int micro,
                    int64_t max_pairs = 0) {
  absl::StatusOr<EvalResult> r = EvaluateDataset(run, ds, micro, kTinySeqLen, 0, max_pairs);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : EvalResult();
}

TEST(EvaluatorTest, MicroBatchesMergeToTheWholeBatch) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*run);
  const data::PreferenceDataset ds = TinyDataset(0, 5);
  const StepMetrics whole = run->step->Evaluate(TinyBatch(0, 5)).value();
  const EvalResult one = Evaluate(*run, ds, 5);
  ExpectSameNamed(one.Named(), whole.Named(ObjectiveKind::kDpo, run->preference_names),
                  "one batch: EvalResult::Named vs StepMetrics::Named");
  EXPECT_EQ(one.pairs, 5);
  EXPECT_EQ(one.preferences[0].pairs, 3);
  EXPECT_EQ(one.preferences[1].pairs, 2);
  EXPECT_NEAR(one.balance, whole.balance, 1e-12);
  for (int micro : {1, 2, 3}) {
    const EvalResult merged = Evaluate(*run, ds, micro);
    ExpectSame(Flatten(merged), Flatten(one), 1e-12,
               "micro-batches of " + std::to_string(micro) + " vs one batch");
  }
  // The weighting matters: the plain mean of the batches' group and balance losses is off.
  const double g01 = run->step->Evaluate(TinyBatch(0, 2)).value().group;
  const double g23 = run->step->Evaluate(TinyBatch(2, 2)).value().group;
  const double g4 = run->step->Evaluate(TinyBatch(4, 1)).value().group;
  EXPECT_GT(std::fabs((g01 + g23 + g4) / 3 - one.group), 1e-9);
  EXPECT_GT(one.group, 0.0);
  EXPECT_GT(one.balance, 0.0);
  EXPECT_EQ(one.router_layers, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(one.group_names, (std::vector<std::string>{"group0", "group1"}));
  EXPECT_EQ(one.preference_names, (std::vector<std::string>{"pref0", "pref1"}));
}

TEST(EvaluatorTest, MaxPairsTakesTheFirstPairs) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*run);
  const EvalResult first3 = Evaluate(*run, TinyDataset(0, 5), 2, /*max_pairs=*/3);
  EXPECT_EQ(first3.pairs, 3);
  ExpectSame(Flatten(first3), Flatten(Evaluate(*run, TinyDataset(0, 3), 3)), 1e-12,
             "max_pairs 3 of 5 vs a 3-pair set");
  EXPECT_EQ(Evaluate(*run, TinyDataset(0, 5), 2, /*max_pairs=*/50).pairs, 5);
}

TEST(EvaluatorTest, LoraWithMoreLabelsThanGroups) {
  config::RunConfig c = TinyConfig();
  c.mutable_adapter()->set_kind(config::AdapterConfig::LORA);
  auto run = BuildRunComponents(c, "").value();
  PerturbB(*run);
  // Labels i % 3: the first batch of 2 sees labels {0, 1} only, the second {2, 0}.
  const data::PreferenceDataset ds = TinyDataset(0, 4, 3);
  const EvalResult one = Evaluate(*run, ds, 4);
  const StepMetrics whole = run->step->Evaluate(TinyBatch(0, 4, 3)).value();
  ExpectSameNamed(one.Named(), whole.Named(ObjectiveKind::kDpo, run->preference_names),
                  "LoRA, one batch");
  ASSERT_EQ(one.preferences.size(), 3u);
  EXPECT_EQ(one.preferences[0].pairs, 2);
  EXPECT_EQ(one.preferences[2].pairs, 1);
  EXPECT_TRUE(one.overall.router_mass.empty());
  EXPECT_EQ(one.balance, 0.0);
  ExpectSame(Flatten(Evaluate(*run, ds, 2)), Flatten(one), 1e-12, "LoRA, batches of 2");
}

TEST(EvaluatorTest, CachedReferenceEqualsLiveReference) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*run);
  const data::PreferenceDataset ds = TinyDataset(0, 5);
  const EvalReference ref = ComputeEvalReference(*run, ds, 2, kTinySeqLen, 0, 0).value();
  ASSERT_EQ(ref.chosen.size(), 5u);
  const EvalResult cached = EvaluateDataset(*run, ds, 2, kTinySeqLen, 0, 0, &ref).value();
  ExpectSame(Flatten(cached), Flatten(Evaluate(*run, ds, 2)), 0, "cached vs live reference");
}

TEST(EvaluatorTest, FullFineTuningWithPrecomputedReference) {
  config::RunConfig c = TinyConfig();
  c.mutable_adapter()->set_kind(config::AdapterConfig::FULL);
  c.mutable_objective()->set_precompute_reference(true);
  auto run = BuildRunComponents(c, "").value();
  const data::PreferenceDataset ds = TinyDataset(0, 4);
  absl::StatusOr<EvalResult> no_ref = EvaluateDataset(*run, ds, 2, kTinySeqLen, 0, 0);
  ASSERT_FALSE(no_ref.ok());
  EXPECT_NE(no_ref.status().message().find("eval pairs [0, 2)"), absl::string_view::npos)
      << no_ref.status();
  const EvalReference ref = ComputeEvalReference(*run, ds, 2, kTinySeqLen, 0, 0).value();
  const EvalResult r = EvaluateDataset(*run, ds, 2, kTinySeqLen, 0, 0, &ref).value();
  // Untrained, the policy is its own reference: every margin 0, L = -log sigmoid(0).
  EXPECT_NEAR(r.main, std::log(2.0), 1e-12);
  EXPECT_NEAR(r.overall.margin, 0.0, 1e-12);
  EXPECT_EQ(r.overall.accuracy, 0.0);  // a tie counts as wrong
  for (double g : AllGrads(*run)) ASSERT_EQ(g, 0.0) << "evaluation touched a gradient";
}

TEST(EvaluatorTest, JsonRoundTrip) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*run);
  EvalResult r = Evaluate(*run, TinyDataset(0, 5), 2);
  r.preference_names = {"helpful", "harm \"less\""};
  r.group_names = {"g-helpful", "g-harmless"};
  const EvalResult back = EvalResultFromJson(EvalResultToJson(r), "eval.json").value();
  ExpectSame(Flatten(back), Flatten(r), 0, "JSON round trip");
  EXPECT_EQ(back.preference_names, r.preference_names);
  EXPECT_EQ(back.group_names, r.group_names);
  EXPECT_EQ(back.kind, ObjectiveKind::kDpo);
  ExpectSameNamed(back.Named(), r.Named(), "Named after the round trip");
  EXPECT_EQ(r.Named().count("rewards/accuracy/helpful"), 1u);
  EXPECT_EQ(r.Named().count("router/harm \"less\"/empty"), 1u);

  // SFT: no rewards (NaN, written as null) and the written file read back.
  config::RunConfig c = TinyConfig();
  c.mutable_objective()->set_kind(config::ObjectiveConfig::SFT);
  auto sft_run = BuildRunComponents(c, "").value();
  PerturbB(*sft_run);
  const EvalResult sft = Evaluate(*sft_run, TinyDataset(0, 5), 2);
  EXPECT_TRUE(std::isnan(sft.overall.accuracy));
  EXPECT_EQ(sft.overall.pairs, 5);
  EXPECT_NEAR(sft.main, sft_run->step->Evaluate(TinyBatch(0, 5)).value().main, 1e-12);
  EXPECT_EQ(sft.Named().count("loss/sft"), 1u);
  EXPECT_EQ(sft.Named().count("rewards/accuracy"), 0u);
  const std::string path = TempDir() + "/eval.json";
  ASSERT_TRUE(WriteEvalResult(path, sft).ok());
  const EvalResult sft_back = ReadEvalResult(path).value();
  EXPECT_EQ(sft_back.kind, ObjectiveKind::kSft);
  ExpectSame(Flatten(sft_back), Flatten(sft), 0, "SFT eval.json round trip");
}

std::string ErrorOf(const nlohmann::json& j) {
  absl::StatusOr<EvalResult> r = EvalResultFromJson(j.dump(), "run/eval.json");
  EXPECT_FALSE(r.ok());
  return r.ok() ? "" : std::string(r.status().message());
}

TEST(EvaluatorTest, JsonErrorsNameTheField) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  const nlohmann::json good =
      nlohmann::json::parse(EvalResultToJson(Evaluate(*run, TinyDataset(0, 4), 4)));
  ASSERT_TRUE(EvalResultFromJson(good.dump(), "x").ok());
  nlohmann::json j = good;
  j["overall"]["accuracy"] = "high";
  EXPECT_EQ(ErrorOf(j), "run/eval.json: overall.accuracy: expected a number");
  j = good;
  j.erase("per_preference");
  EXPECT_EQ(ErrorOf(j), "run/eval.json: per_preference: missing");
  j = good;
  j["per_preference"][1]["router_mass"].push_back(0.5);
  EXPECT_EQ(ErrorOf(j), "run/eval.json: per_preference[1].router_mass: has 4 entries, expected 3");
  j = good;
  j["per_preference"][0]["router_mass_by_layer"][1][2] = true;
  EXPECT_EQ(ErrorOf(j),
            "run/eval.json: per_preference[0].router_mass_by_layer[1][2]: expected a number");
  j = good;
  j["format"] = "other";
  EXPECT_NE(ErrorOf(j).find("format"), std::string::npos);
  absl::StatusOr<EvalResult> torn = EvalResultFromJson(good.dump().substr(0, 40), "run/eval.json");
  EXPECT_EQ(torn.status().message(), "run/eval.json: not valid JSON");
  absl::StatusOr<EvalResult> missing = ReadEvalResult(TempDir() + "/nowhere/eval.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nowhere/eval.json"), absl::string_view::npos);
}

TEST(EvaluatorTest, BadPairsAreNamed) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  absl::StatusOr<EvalResult> r = EvaluateDataset(*run, TinyDataset(0, 4), 2, /*seq_len=*/5, 0, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "eval pair 0 (source 0, line 1): 6 tokens do not fit seq_len 5");
  r = EvaluateDataset(*run, TinyDataset(0, 4, 3), 2, kTinySeqLen, 0, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "eval pair 2 (source 0, line 3): preference 2 is outside [0, 2) (one label per expert "
            "group)");
  r = EvaluateDataset(*run, TinyDataset(0, 0), 2, kTinySeqLen, 0, 0);
  EXPECT_FALSE(r.ok());
  r = EvaluateDataset(*run, TinyDataset(0, 4), 0, kTinySeqLen, 0, 0);
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace pmol
