// PreferenceStep properties the PyTorch oracle tests (tests/grads) do not reach, in f64:
//  - activation recompute with adapter dropout reproduces the same dropout masks, so its
//    gradients equal those without recompute (1e-12 relative: only summation order could
//    differ, and it does not), while the dropout visibly changes the gradients;
//  - cached reference log-probs (precompute_reference) give exactly the step of a live
//    reference forward;
//  - gradient accumulation over two half micro-batches with loss_scale 1/2 equals one
//    step on the whole batch when the loss is a mean over pairs (DPO only; the group loss
//    is a mean over tokens, which halves do not split evenly).
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/train/run_components.h"
#include "tests/model/model_test_util.h"

namespace pmol {
namespace {

constexpr char kModelJson[] = R"({"model_type": "llama", "hidden_size": 16,
    "intermediate_size": 24, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 48, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": false})";

std::string ModelDir() {
  static const std::string dir = [] {
    const std::string d = TempDir() + "/model";
    WriteRandomModel(kModelJson, d, 17, 0.2);
    return d;
  }();
  return dir;
}

config::RunConfig Config() {
  config::RunConfig c;
  c.mutable_model()->set_path(ModelDir());
  c.mutable_model()->set_dtype("f64");
  c.mutable_model()->set_threads(2);
  c.mutable_adapter()->set_num_groups(2);
  c.mutable_adapter()->set_experts_per_group(2);
  c.mutable_adapter()->set_rank(3);
  c.set_seed(5);
  return c;
}

data::PreferenceBatch Batch(int first, int count) {
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}, {10}};
  const std::vector<std::vector<int32_t>> chosen = {{11, 12}, {13, 14, 15}, {16}, {17, 18, 19, 20}};
  const std::vector<std::vector<int32_t>> rejected = {{21, 22, 23}, {24}, {25, 26}, {27, 28}};
  data::PreferenceDataset ds;
  std::vector<int64_t> idx;
  for (int i = first; i < first + count; ++i) {
    data::TokenizedPair p;
    p.prompt = prompts[i];
    p.chosen = chosen[i];
    p.rejected = rejected[i];
    p.preference = i % 2;
    ds.pairs.push_back(p);
    idx.push_back(i - first);
  }
  return data::MakePaddedBatch(ds, idx, count, 8, 0);
}

// Nonzero lora_B so that adapters (and their dropout) change the outputs.
void PerturbB(RunComponents& run) {
  for (AdaptedModule& am : run.adapters->modules()) {
    double* b = am.params.lora_B.data_as<double>();
    for (int64_t i = 0; i < am.params.lora_B.numel(); ++i) b[i] = 0.05 * std::sin(1.0 + i);
  }
}

std::vector<double> AllGrads(RunComponents& run) {
  std::vector<double> out;
  for (auto& [name, g] : run.TrainableGrads()) {
    const std::vector<double> v = g.ToDoubles();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<double> StepGrads(config::RunConfig c, bool recompute, double dropout) {
  c.mutable_model()->set_recompute_activations(recompute);
  c.mutable_adapter()->set_dropout(dropout);
  auto run = BuildRunComponents(c, "").value();
  PerturbB(*run);
  run->adapters->SetTraining(true, 99, 3);
  EXPECT_TRUE(run->step->Run(Batch(0, 4), 1.0).ok());
  return AllGrads(*run);
}

TEST(PreferenceStepTest, RecomputeReproducesDropoutMasks) {
  const std::vector<double> plain = StepGrads(Config(), false, 0.3);
  const std::vector<double> recompute = StepGrads(Config(), true, 0.3);
  ExpectClose(recompute, plain, 1e-12, "recompute vs stored activations, dropout 0.3");
  const std::vector<double> no_dropout = StepGrads(Config(), false, 0.0);
  double diff = 0;
  for (size_t i = 0; i < plain.size(); ++i) diff = std::max(diff, std::fabs(plain[i] - no_dropout[i]));
  EXPECT_GT(diff, 1e-4) << "dropout must change the gradients, or the check above is empty";
}

TEST(PreferenceStepTest, CachedReferenceEqualsLiveReference) {
  auto run = BuildRunComponents(Config(), "").value();
  PerturbB(*run);
  const data::PreferenceBatch batch = Batch(0, 4);
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
  config::RunConfig c = Config();
  c.mutable_objective()->set_group_loss_weight(0);
  c.mutable_objective()->set_balance_loss_weight(0);
  auto run = BuildRunComponents(c, "").value();
  PerturbB(*run);
  auto whole = run->step->Run(Batch(0, 4), 1.0).value();
  const std::vector<double> whole_grads = AllGrads(*run);
  run->ZeroGrads();
  auto first = run->step->Run(Batch(0, 2), 0.5).value();
  auto second = run->step->Run(Batch(2, 2), 0.5).value();
  EXPECT_NEAR(0.5 * (first.main + second.main), whole.main, 1e-12);
  ExpectClose(AllGrads(*run), whole_grads, 1e-12, "two accumulated halves vs whole batch");
}

}  // namespace
}  // namespace pmol
