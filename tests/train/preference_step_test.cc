// PreferenceStep properties the PyTorch oracle tests (tests/grads) do not reach, in f64:
//  - activation recompute with adapter dropout reproduces the same dropout masks, so its
//    gradients equal those without recompute (1e-12 relative: only summation order could
//    differ, and it does not), while the dropout visibly changes the gradients;
//  - cached reference log-probs (precompute_reference) give exactly the step of a live
//    reference forward;
//  - gradient accumulation over two half micro-batches with loss_scale 1/2 equals one
//    step on the whole batch when the loss is a mean over pairs (DPO only; the group loss
//    is a mean over tokens, which halves do not split evenly);
//  - Evaluate (forward only) gives Run's metrics and leaves every gradient as it was, and
//    ignores dropout (eval mode), while Run with dropout differs;
//  - router mass per layer: layer 0's figures equal those of a run that adapts layer 0
//    only (layer 1's adapters cannot change layer 0's routers), and with the same modules
//    in every layer their mean over layers is the overall router mass;
//  - one row per pair with a shared prompt (objective.share_prompt) gives the metrics and
//    gradients of two rows per pair, for DPO and REWARD, with whole and partly shared
//    prompts, with and without recompute: 1e-12 relative (both run in f64; only the
//    order of sums differs). The PyTorch oracle tests (tests/grads) run shared rows too,
//    as it is the default, against an oracle that runs two rows per pair.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pmol/train/run_components.h"
#include "tests/model/model_test_util.h"
#include "tests/train/train_test_util.h"

namespace pmol {
namespace {

// Every figure of a StepMetrics, flattened (counts as doubles), for closeness checks.
std::vector<double> Flatten(const StepMetrics& m) {
  std::vector<double> v = {m.loss, m.main, m.group, m.balance, double(m.pairs), double(m.tokens),
                           double(m.main_count)};
  auto add = [&](const auto& xs) { for (auto x : xs) v.push_back(static_cast<double>(x)); };
  add(m.pref_pairs);
  add(m.reward_chosen_sum);
  add(m.reward_rejected_sum);
  add(m.correct_sum);
  add(m.main_sum);
  add(m.router_positions);
  add(m.router_layers);
  for (const auto& row : m.router_mass) add(row);
  for (const auto& layers : m.router_mass_by_layer)
    for (const auto& row : layers) add(row);
  for (const auto& row : m.router_slot_sums) add(row);
  return v;
}

std::vector<double> StepGrads(config::RunConfig c, bool recompute, double dropout) {
  c.mutable_model()->set_recompute_activations(recompute);
  c.mutable_adapter()->set_dropout(dropout);
  auto run = BuildRunComponents(c, "").value();
  PerturbB(*run);
  run->adapters->SetTraining(true, 99, 3);
  EXPECT_TRUE(run->step->Run(TinyBatch(0, 4), 1.0).ok());
  return AllGrads(*run);
}

TEST(PreferenceStepTest, RecomputeReproducesDropoutMasks) {
  const std::vector<double> plain = StepGrads(TinyConfig(), false, 0.3);
  const std::vector<double> recompute = StepGrads(TinyConfig(), true, 0.3);
  ExpectClose(recompute, plain, 1e-12, "recompute vs stored activations, dropout 0.3");
  const std::vector<double> no_dropout = StepGrads(TinyConfig(), false, 0.0);
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i) diff = std::max(diff, std::fabs(plain[i] - no_dropout[i]));
  EXPECT_GT(diff, 1e-4) << "dropout must change the gradients, or the check above is empty";
}

TEST(PreferenceStepTest, CachedReferenceEqualsLiveReference) {
  auto run = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*run);
  const data::PreferenceBatch batch = TinyBatch(0, 4);
  auto live = run->step->Run(batch, 1.0).value();
  const std::vector<double> live_grads = AllGrads(*run);
  run->ZeroGrads();
  // The reference is the frozen base: caching it must not depend on the adapters' state.
  auto cached = run->step->ReferenceLogProbs(batch).value();
  auto from_cache = run->step->Run(batch, 1.0, &cached).value();
  EXPECT_EQ(from_cache.loss, live.loss);
  EXPECT_EQ(AllGrads(*run), live_grads);
}

TEST(PreferenceStepTest, AccumulatingHalvesEqualsTheWholeBatch) {
  config::RunConfig c = TinyConfig();
  c.mutable_objective()->set_group_loss_weight(0);
  c.mutable_objective()->set_balance_loss_weight(0);
  auto run = BuildRunComponents(c, "").value();
  PerturbB(*run);
  auto whole = run->step->Run(TinyBatch(0, 4), 1.0).value();
  const std::vector<double> whole_grads = AllGrads(*run);
  run->ZeroGrads();
  auto first = run->step->Run(TinyBatch(0, 2), 0.5).value();
  auto second = run->step->Run(TinyBatch(2, 2), 0.5).value();
  EXPECT_NEAR(0.5 * (first.main + second.main), whole.main, 1e-12);
  ExpectClose(AllGrads(*run), whole_grads, 1e-12, "two accumulated halves vs whole batch");
}

TEST(PreferenceStepTest, EvaluateGivesRunsMetricsAndLeavesGradients) {
  for (auto kind : {config::ObjectiveConfig::DPO, config::ObjectiveConfig::SFT,
                    config::ObjectiveConfig::REWARD}) {
    SCOPED_TRACE(config::ObjectiveConfig::Kind_Name(kind));
    config::RunConfig c = TinyConfig();
    c.mutable_objective()->set_kind(kind);
    auto run = BuildRunComponents(c, "").value();
    PerturbB(*run);
    const data::PreferenceBatch batch = TinyBatch(0, 4);
    const StepMetrics trained = run->step->Run(batch, 1.0).value();
    const std::vector<double> grads = AllGrads(*run);
    double norm = 0;
    for (double g : grads) norm = std::max(norm, std::fabs(g));
    ASSERT_GT(norm, 1e-6) << "Run must leave gradients, or 'untouched' below checks nothing";
    const StepMetrics evaluated = run->step->Evaluate(batch).value();
    EXPECT_EQ(AllGrads(*run), grads) << "Evaluate changed a gradient";
    ExpectClose(Flatten(evaluated), Flatten(trained), 1e-12, "Evaluate vs Run metrics");
    EXPECT_EQ(evaluated.pref_pairs, (std::vector<int64_t>{2, 2, 4}));
    EXPECT_GT(evaluated.group, 0.0);
    EXPECT_GT(evaluated.balance, 0.0);
    EXPECT_EQ(evaluated.router_layers, (std::vector<int64_t>{0, 1}));
    // Router figures are named for every objective (SFT included).
    const StepOptions options = StepOptionsFromConfig(c.objective(), run->num_preferences);
    EXPECT_EQ(evaluated.Named(options.kind, run->preference_names).count("router/pref1/group1"),
              1u);
  }
}

TEST(PreferenceStepTest, EvaluateRunsWithoutDropout) {
  auto plain = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*plain);
  const data::PreferenceBatch batch = TinyBatch(0, 4);
  const StepMetrics want = plain->step->Run(batch, 1.0).value();

  config::RunConfig c = TinyConfig();
  c.mutable_adapter()->set_dropout(0.3);
  auto dropped = BuildRunComponents(c, "").value();
  PerturbB(*dropped);
  dropped->adapters->SetTraining(true, 99, 3);
  const StepMetrics with_dropout = dropped->step->Run(batch, 1.0).value();
  EXPECT_GT(std::fabs(with_dropout.main - want.main), 1e-6)
      << "dropout must change Run's loss, or the check below is empty";
  const StepMetrics evaluated = dropped->step->Evaluate(batch).value();
  ExpectClose(Flatten(evaluated), Flatten(want), 1e-12, "Evaluate with dropout 0.3 vs dropout 0");
}

TEST(PreferenceStepTest, RouterMassByLayer) {
  const data::PreferenceBatch batch = TinyBatch(0, 4);
  auto both = BuildRunComponents(TinyConfig(), "").value();
  PerturbB(*both);
  const StepMetrics m = both->step->Run(batch, 1.0).value();
  ASSERT_EQ(m.router_mass_by_layer.size(), 3u);  // 2 preferences + overall
  for (size_t p = 0; p < m.router_mass.size(); ++p) {
    ASSERT_EQ(m.router_mass_by_layer[p].size(), 2u);
    std::vector<double> mean(m.router_mass[p].size(), 0.0);
    for (const auto& layer : m.router_mass_by_layer[p])
      for (size_t k = 0; k < mean.size(); ++k) mean[k] += layer[k] / 2;
    ExpectClose(mean, m.router_mass[p], 1e-12, "mean over layers vs router_mass");
  }

  config::RunConfig c = TinyConfig();
  c.mutable_adapter()->add_layers(0);
  auto first_only = BuildRunComponents(c, "").value();
  PerturbB(*first_only);
  const StepMetrics m0 = first_only->step->Run(batch, 1.0).value();
  EXPECT_EQ(m0.router_layers, (std::vector<int64_t>{0}));
  for (size_t p = 0; p < m.router_mass.size(); ++p) {
    ExpectClose(m.router_mass_by_layer[p][0], m0.router_mass[p], 1e-12,
                "layer 0 of a 2-layer PMoL vs a layer-0-only PMoL");
    double diff = 0;  // the layers differ, or the per-layer split shows nothing
    for (size_t k = 0; k < m.router_mass[p].size(); ++k)
      diff = std::max(diff, std::fabs(m.router_mass_by_layer[p][0][k] -
                                      m.router_mass_by_layer[p][1][k]));
    EXPECT_GT(diff, 1e-9);
  }
}

// Metrics and gradients of one step, with or without a shared prompt.
std::pair<std::vector<double>, std::vector<double>> SharedOrNot(
    config::RunConfig c, const data::PreferenceBatch& batch, bool share) {
  c.mutable_objective()->set_share_prompt(share);
  auto run = BuildRunComponents(c, "").value();
  PerturbB(*run);
  const StepMetrics m = run->step->Run(batch, 1.0).value();
  return {Flatten(m), AllGrads(*run)};
}

TEST(PreferenceStepTest, SharedPromptRowsGiveTheStepOfTwoRows) {
  data::PreferenceBatch partly = TinyBatch(0, 4);
  partly.rejected.input_ids[1] = 40;                 // pair 0 shares 1 prompt token
  partly.rejected.input_ids[2 * kTinySeqLen] = 41;   // pair 2 shares none
  for (auto kind : {config::ObjectiveConfig::DPO, config::ObjectiveConfig::REWARD}) {
    for (bool recompute : {false, true}) {
      for (bool partial : {false, true}) {
        const data::PreferenceBatch& batch = partial ? partly : TinyBatch(0, 4);
        const std::string what = absl::StrCat(config::ObjectiveConfig::Kind_Name(kind),
                                              recompute ? " recompute" : "",
                                              partial ? " partly shared" : "");
        config::RunConfig c = TinyConfig();
        c.mutable_objective()->set_kind(kind);
        c.mutable_model()->set_recompute_activations(recompute);
        const auto two_rows = SharedOrNot(c, batch, false);
        const auto shared = SharedOrNot(c, batch, true);
        ExpectClose(shared.first, two_rows.first, 1e-12, what + ": metrics");
        ExpectClose(shared.second, two_rows.second, 1e-12, what + ": gradients");
      }
    }
  }
}

TEST(PreferenceStepTest, MixedPrecisionComputeIsRefusedByName) {
  for (const char* dtype : {"bf16", "f16"}) {
    config::RunConfig c = TinyConfig();
    c.mutable_model()->set_dtype(dtype);
    absl::StatusOr<std::unique_ptr<RunComponents>> run = BuildRunComponents(c, "");
    ASSERT_FALSE(run.ok()) << dtype;
    EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(run.status().message());
    EXPECT_NE(message.find(absl::StrCat("model.dtype: '", dtype, "'")), std::string::npos) << message;
    EXPECT_NE(message.find("not implemented yet"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace pmol
