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
//    as it is the default, against an oracle that runs two rows per pair;
//  - bf16 mixed precision follows f32, with adapters and with full fine-tuning (see
//    MixedPrecisionFollowsF32 for the bounds), and f16 compute is refused by name.
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

// The run of MixedPrecisionFollowsF32: one step of `kind` in `dtype` with lora_B set
// to the same values in every dtype (or, with `full`, full fine-tuning: every weight
// trained); the metrics and every trainable gradient.
struct MixedStep {
  StepMetrics metrics;
  std::vector<std::vector<double>> grads;
  std::vector<DType> param_dtypes, grad_dtypes;
};

MixedStep RunInDType(const std::string& dtype, config::ObjectiveConfig::Kind kind, bool recompute,
                     bool full = false) {
  config::RunConfig c = TinyConfig();
  c.mutable_model()->set_dtype(dtype);
  c.mutable_model()->set_recompute_activations(recompute);
  c.mutable_objective()->set_kind(kind);
  if (full) c.mutable_adapter()->set_kind(config::AdapterConfig::FULL);
  auto run = BuildRunComponents(c, "").value();
  if (!full) {
    for (AdaptedModule& am : run->adapters->modules()) {
      std::vector<double> b(am.params.lora_B.numel());
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.05 * std::sin(1.0 + i);
      am.params.lora_B.CopyFrom(Tensor::FromHost(b.data(), am.params.lora_B.shape(), DType::kF64,
                                                 am.params.lora_B.backend())
                                    .ConvertTo(am.params.lora_B.dtype()));
    }
  }
  MixedStep out;
  out.metrics = run->step->Run(TinyBatch(0, 4), 1.0).value();
  for (auto& [name, g] : run->TrainableGrads()) {
    out.grads.push_back(g.ToDoubles());
    out.grad_dtypes.push_back(g.dtype());
  }
  for (auto& [name, p] : run->TrainableParams()) out.param_dtypes.push_back(p.dtype());
  return out;
}

double RelativeL2(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

// bf16 mixed precision (kernels/backend.h) against f32 on the same model, for DPO (with
// the PMoL router and both auxiliary losses), SFT and REWARD, and for DPO and SFT with full
// fine-tuning: bf16 weights (rounded from the f32 checkpoint) and activations, f32
// statistics and gradients.
//  - The parameters are bf16 working copies and every gradient is f32 (under full
//    fine-tuning, every weight's: norms, biases, embedding and head included).
//  - Losses and router mass: the step's losses are means of log-prob sums computed in f32
//    from f32 logits; the difference comes from rounding the weights and the activations
//    to bf16 (relative 2^-9 each) through 2 layers: 2e-2 relative to max(|f32|, 0.1)
//    bounds it with room (measured: under 8e-4). The rewards, beta = 0.1 times
//    differences of sequence log-prob sums, within 1e-2 absolute (0.1 nats of a sum;
//    measured: 3e-3).
//  - Gradients, per tensor: relative L2 error <= 8e-2. Every backward GEMM reads bf16
//    operands, so each gradient carries several bf16 roundings (measured: 0.7e-2 to
//    4.1e-2 over the 42 or 43 adapter tensors of each objective, at most 3.0e-2 over the
//    21 weights of full fine-tuning). A lost term or a wrong scale
//    shows at O(1); and f32 against f64 on the same model differs by under 1e-5, so the
//    check sees what bf16 changes and nothing else.
//  - Activation recompute in bf16 gives bit-identical gradients (the forward is
//    recomputed with the same bf16 roundings).
TEST(PreferenceStepTest, MixedPrecisionFollowsF32) {
  struct Case {
    config::ObjectiveConfig::Kind kind;
    bool full;  // full fine-tuning: every weight's gradient, f32 for the bf16 weights
  };
  for (const Case c : {Case{config::ObjectiveConfig::DPO, false}, Case{config::ObjectiveConfig::SFT, false},
                       Case{config::ObjectiveConfig::REWARD, false}, Case{config::ObjectiveConfig::DPO, true},
                       Case{config::ObjectiveConfig::SFT, true}}) {
    const auto kind = c.kind;
    const std::string name = config::ObjectiveConfig::Kind_Name(kind) + (c.full ? " full fine-tuning" : "");
    SCOPED_TRACE(name);
    const MixedStep f32 = RunInDType("f32", kind, false, c.full);
    const MixedStep f64 = RunInDType("f64", kind, false, c.full);
    const MixedStep bf16 = RunInDType("bf16", kind, false, c.full);
    const MixedStep bf16_recompute = RunInDType("bf16", kind, true, c.full);
    for (DType d : bf16.param_dtypes)
      EXPECT_TRUE(d == DType::kBF16 || kind == config::ObjectiveConfig::REWARD) << DTypeName(d);
    for (DType d : bf16.grad_dtypes) EXPECT_EQ(d, DType::kF32) << DTypeName(d);
    // Losses and router figures relative to max(|f32|, 0.1); rewards (beta times a
    // difference of log-prob sums) absolutely; counts exactly. Which pairs are ranked
    // right (correct_sum) may flip on a near tie and is not compared.
    const StepMetrics& a = bf16.metrics;
    const StepMetrics& b = f32.metrics;
    std::vector<double> got = {a.loss, a.main, a.group, a.balance},
                        want = {b.loss, b.main, b.group, b.balance};
    for (const auto& row : a.router_mass) got.insert(got.end(), row.begin(), row.end());
    for (const auto& row : b.router_mass) want.insert(want.end(), row.begin(), row.end());
    ASSERT_EQ(got.size(), want.size());
    double worst_metric = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double err = std::fabs(got[i] - want[i]) / std::max(std::fabs(want[i]), 0.1);
      worst_metric = std::max(worst_metric, err);
      EXPECT_LE(err, 2e-2) << "metric " << i << ": bf16 " << got[i] << ", f32 " << want[i];
    }
    for (size_t p = 0; p < b.reward_chosen_sum.size(); ++p) {
      EXPECT_NEAR(a.reward_chosen_sum[p], b.reward_chosen_sum[p], 1e-2) << "preference " << p;
      EXPECT_NEAR(a.reward_rejected_sum[p], b.reward_rejected_sum[p], 1e-2) << "preference " << p;
    }
    EXPECT_EQ(a.pref_pairs, b.pref_pairs);
    EXPECT_EQ(a.tokens, b.tokens);
    ASSERT_EQ(bf16.grads.size(), f32.grads.size());
    double worst = 0, worst_f64 = 0, total_norm = 0;
    for (size_t t = 0; t < f32.grads.size(); ++t) {
      const double err = RelativeL2(bf16.grads[t], f32.grads[t]);
      worst = std::max(worst, err);
      worst_f64 = std::max(worst_f64, RelativeL2(f32.grads[t], f64.grads[t]));
      for (double g : f32.grads[t]) total_norm += g * g;
      EXPECT_LE(err, 8e-2) << "gradient tensor " << t;
      EXPECT_EQ(bf16_recompute.grads[t], bf16.grads[t]) << "recompute changed gradient " << t;
    }
    EXPECT_GT(total_norm, 1e-8) << "the step must produce gradients for the check to mean anything";
    EXPECT_LT(worst_f64, 1e-5) << "f32 against f64";
    EXPECT_GT(worst, 1e-4) << "bf16 must differ from f32, or it did not compute in bf16";
    std::printf("%s: bf16 vs f32 worst metric %.2e, worst gradient %.2e over %zu tensors; f32 vs f64 %.2e\n",
                name.c_str(), worst_metric, worst, f32.grads.size(), worst_f64);
  }
}

TEST(PreferenceStepTest, F16ComputeIsRefusedByName) {
  config::RunConfig f16 = TinyConfig();
  f16.mutable_model()->set_dtype("f16");
  absl::StatusOr<std::unique_ptr<RunComponents>> run = BuildRunComponents(f16, "");
  ASSERT_FALSE(run.ok());
  EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(run.status().message().find("model.dtype: 'f16'"), std::string::npos) << run.status();
}

}  // namespace
}  // namespace pmol
