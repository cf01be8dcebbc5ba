// Objectives against an independent PyTorch reference (objectives_torch_oracle.py, f64
// autograd): every DPO variant as TRL defines it (incl. IPO length-normalised); the router
// losses (through RouterLossBatch on the CPU backend): the group soft loss by
// F.cross_entropy with label_smoothing (value, gradient wrt g, gradient wrt the router
// logits through softmax) and the balance loss; the reward loss, sequence log-probs and
// the SFT value by F.cross_entropy(ignore_index=-1).
// Tolerance: 1e-12 relative to the largest magnitude of each compared quantity. Both
// sides compute in f64 with the same formulas in a different order (and a different
// stable-softplus/log-softmax implementation): ~1e-16 per operation, amplified at most
// ~1e2 by 1/s factors of router masses and the sums here, so ~1e-14 expected; 1e-12
// leaves 100x headroom while any formula error shows up at >= 1e-3.
#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/objectives/dpo_loss.h"
#include "pmol/objectives/reward_loss.h"
#include "pmol/objectives/router_losses.h"
#include "pmol/objectives/sequence_logprobs.h"
#include "pmol/objectives/sft_loss.h"
#include "tests/objectives/objectives_test_util.h"
#include "tests/objectives/router_losses_test_util.h"

namespace pmol {
namespace {

using nlohmann::json;
using testing::Cpu;

constexpr double kTol = 1e-12;

std::vector<double> Vec(const json& j) { return j.get<std::vector<double>>(); }

std::vector<std::vector<double>> Matrix(const std::vector<double>& flat, int64_t cols) {
  std::vector<std::vector<double>> m;
  for (size_t i = 0; i < flat.size(); i += cols) m.emplace_back(flat.begin() + i, flat.begin() + i + cols);
  return m;
}

std::vector<double> Softmax(const std::vector<double>& z, int64_t cols) {
  std::vector<double> g(z.size());
  for (size_t r = 0; r < z.size(); r += cols) {
    double mx = z[r];
    for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, z[r + c]);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += g[r + c] = std::exp(z[r + c] - mx);
    for (int64_t c = 0; c < cols; ++c) g[r + c] /= sum;
  }
  return g;
}

const char* LossName(DpoOptions::Loss l) {
  switch (l) {
    case DpoOptions::kSigmoid: return "sigmoid";
    case DpoOptions::kIpo: return "ipo";
    case DpoOptions::kHinge: return "hinge";
    case DpoOptions::kConservative: return "conservative";
  }
  return "?";
}

struct GroupCase {
  ExpertLayout layout;
  std::vector<double> z;
  std::vector<int32_t> labels;
  double eps;
};

struct BalanceCase {
  ExpertLayout layout;
  std::vector<double> g;
  std::vector<uint8_t> valid;
};

class TorchOracleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::mt19937 rng(2024);
    json in;
    // DPO: every loss type, several betas, one set of random pairs each.
    for (DpoOptions::Loss kind : {DpoOptions::kSigmoid, DpoOptions::kIpo, DpoOptions::kHinge,
                                  DpoOptions::kConservative}) {
      for (double beta : {0.1, 0.7}) {
        for (bool normalize : {false, true}) {
          if (normalize && kind != DpoOptions::kIpo) continue;
          DpoOptions o{kind, beta, kind == DpoOptions::kConservative ? 0.15 : 0.0, normalize};
          DpoInputs d;
          d.ref_chosen = testing::Uniform(rng, 8, -30, -5);
          d.ref_rejected = testing::Uniform(rng, 8, -30, -5);
          const std::vector<double> a = testing::Normal(rng, 8, 4.0), b = testing::Normal(rng, 8, 4.0);
          for (int i = 0; i < 8; ++i) {
            d.policy_chosen.push_back(d.ref_chosen[i] + a[i]);
            d.policy_rejected.push_back(d.ref_rejected[i] + b[i]);
            d.chosen_tokens.push_back(1 + rng() % 12);
            d.rejected_tokens.push_back(1 + rng() % 12);
          }
          Dpo().push_back({o, d});
          in["dpo"].push_back({{"loss", LossName(kind)}, {"beta", beta},
                               {"label_smoothing", o.label_smoothing},
                               {"ipo_length_normalize", normalize}, {"pc", d.policy_chosen},
                               {"pr", d.policy_rejected}, {"rc", d.ref_chosen},
                               {"rr", d.ref_rejected}, {"nc", d.chosen_tokens},
                               {"nr", d.rejected_tokens}});
        }
      }
    }
    // Router losses over several layouts.
    const std::vector<ExpertLayout> layouts = {
        {{1}, 1, 4}, {{2, 3}, 1, 4}, {{3, 1, 2}, 2, 4}, {{1, 2, 3, 2}, 0, 4}, {{2, 2}, 2, 4}};
    for (const ExpertLayout& layout : layouts) {
      const int64_t slots = layout.num_slots(), n = 9;
      for (double eps : {0.0, 0.1}) {
        GroupCase c{layout, testing::Normal(rng, n * slots), std::vector<int32_t>(n), eps};
        for (int64_t i = 0; i < n; ++i)
          c.labels[i] = i % 4 == 3 ? -1 : static_cast<int32_t>(rng() % layout.num_groups());
        Group().push_back(c);
        in["group"].push_back({{"experts_per_group", layout.experts_per_group},
                               {"num_empty", layout.num_empty}, {"z", Matrix(c.z, slots)},
                               {"labels", c.labels}, {"eps", eps}});
      }
      BalanceCase bc{layout, Softmax(testing::Normal(rng, n * slots), slots), std::vector<uint8_t>(n)};
      for (int64_t i = 0; i < n; ++i) bc.valid[i] = i % 5 != 4;
      Balance().push_back(bc);
      std::vector<int> valid(bc.valid.begin(), bc.valid.end());
      in["balance"].push_back({{"experts_per_group", layout.experts_per_group},
                               {"g", Matrix(bc.g, slots)}, {"valid", valid}});
    }
    // Reward head.
    RewardH() = testing::Normal(rng, 10 * 6);
    RewardW() = testing::Normal(rng, 6, 0.5);
    in["reward"].push_back({{"h", Matrix(RewardH(), 6)}, {"w", RewardW()}, {"b", 0.2},
                            {"chosen", {3, 9, 1, 4}}, {"rejected", {7, 0, 5, 3}}});
    // Sequence log-probs: 3 rows x 6 positions x 11 tokens.
    SeqLogits() = testing::Normal(rng, 3 * 6 * 11, 1.5);
    SeqTargets().assign(18, -1);
    for (int i : {1, 2, 3, 4, 7, 8, 15}) SeqTargets()[i] = static_cast<int32_t>(rng() % 11);
    SeqCot() = {0.5, -1.25, 2.0};
    std::vector<std::vector<std::vector<double>>> logits3;
    for (int r = 0; r < 3; ++r)
      logits3.push_back(Matrix(std::vector<double>(SeqLogits().begin() + r * 66, SeqLogits().begin() + (r + 1) * 66), 11));
    in["sequence"].push_back({{"logits", logits3}, {"targets", SeqTargets()}, {"cotangent", SeqCot()}});

    const std::string in_path = testing::TempDir() + "/objectives_oracle_in.json";
    const std::string out_path = testing::TempDir() + "/objectives_oracle_out.json";
    std::ofstream(in_path) << in.dump();
    testing::RunPythonOracle("tests/objectives/objectives_torch_oracle.py", in_path + " " + out_path);
    std::ifstream f(out_path);
    Out() = json::parse(f);
  }

  static std::vector<std::pair<DpoOptions, DpoInputs>>& Dpo() { static std::vector<std::pair<DpoOptions, DpoInputs>> v; return v; }
  static std::vector<GroupCase>& Group() { static std::vector<GroupCase> v; return v; }
  static std::vector<BalanceCase>& Balance() { static std::vector<BalanceCase> v; return v; }
  static std::vector<double>& RewardH() { static std::vector<double> v; return v; }
  static std::vector<double>& RewardW() { static std::vector<double> v; return v; }
  static std::vector<double>& SeqLogits() { static std::vector<double> v; return v; }
  static std::vector<int32_t>& SeqTargets() { static std::vector<int32_t> v; return v; }
  static std::vector<double>& SeqCot() { static std::vector<double> v; return v; }
  static json& Out() { static json j; return j; }
};

TEST_F(TorchOracleTest, DpoVariantsMatchTrl) {
  ASSERT_EQ(Out()["dpo"].size(), Dpo().size());
  for (size_t i = 0; i < Dpo().size(); ++i) {
    const auto& [o, d] = Dpo()[i];
    const json& want = Out()["dpo"][i];
    const std::string what = std::string(LossName(o.loss)) + " beta=" + std::to_string(o.beta) +
                             (o.ipo_length_normalize ? " normalised" : "");
    const DpoResult r = DpoLoss(o, d);
    testing::ExpectCloseScaled({r.loss}, {want["loss"].get<double>()}, kTol, what + " loss");
    testing::ExpectCloseScaled(r.d_policy_chosen, Vec(want["d_pc"]), kTol, what + " d_pc");
    testing::ExpectCloseScaled(r.d_policy_rejected, Vec(want["d_pr"]), kTol, what + " d_pr");
    testing::ExpectCloseScaled(r.rewards_chosen, Vec(want["rewards_chosen"]), kTol, what + " rc");
    testing::ExpectCloseScaled(r.rewards_rejected, Vec(want["rewards_rejected"]), kTol, what + " rr");
    EXPECT_EQ(r.accuracy, want["accuracy"].get<double>()) << what;
  }
}

TEST_F(TorchOracleTest, GroupSoftLossMatchesCrossEntropy) {
  ASSERT_EQ(Out()["group"].size(), Group().size());
  for (size_t i = 0; i < Group().size(); ++i) {
    const GroupCase& c = Group()[i];
    const json& want = Out()["group"][i];
    const int64_t slots = c.layout.num_slots(), n = c.labels.size();
    const std::string what = "group case " + std::to_string(i);
    const std::vector<double> g = Softmax(c.z, slots);
    std::vector<double> dgv(n * slots, 0.0);
    const double loss = testing::GroupSoftLossOf(c.layout, g, c.labels, c.eps, 1.0, &dgv);
    testing::ExpectCloseScaled({loss}, {want["loss"].get<double>()}, kTol, what + " F.cross_entropy");
    testing::ExpectCloseScaled({loss}, {want["loss_literal"].get<double>()}, kTol, what + " literal");
    testing::ExpectCloseScaled(dgv, Vec(want["dg"]), kTol, what + " dg");
    std::vector<double> dz(dgv.size());
    for (int64_t r = 0; r < n; ++r) {
      double dot = 0;
      for (int64_t s = 0; s < slots; ++s) dot += g[r * slots + s] * dgv[r * slots + s];
      for (int64_t s = 0; s < slots; ++s) dz[r * slots + s] = g[r * slots + s] * (dgv[r * slots + s] - dot);
    }
    testing::ExpectCloseScaled(dz, Vec(want["dz"]), kTol, what + " dz via softmax");
  }
}

TEST_F(TorchOracleTest, BalanceLossMatches) {
  ASSERT_EQ(Out()["balance"].size(), Balance().size());
  for (size_t i = 0; i < Balance().size(); ++i) {
    const BalanceCase& c = Balance()[i];
    const json& want = Out()["balance"][i];
    const int64_t slots = c.layout.num_slots(), n = c.valid.size();
    const std::string what = "balance case " + std::to_string(i);
    std::vector<double> dg(n * slots, 0.0);
    const double loss = testing::BalanceLossOf(c.layout, c.g, c.valid, 1.0, &dg);
    testing::ExpectCloseScaled({loss}, {want["loss"].get<double>()}, kTol, what + " loss");
    testing::ExpectCloseScaled(dg, Vec(want["dg"]), kTol, what + " dg");
  }
}

TEST_F(TorchOracleTest, RewardLossMatches) {
  const json& want = Out()["reward"][0];
  Tensor h = Tensor::FromHost(RewardH().data(), {10, 6}, DType::kF64, Cpu());
  Tensor w = Tensor::FromHost(RewardW().data(), {6}, DType::kF64, Cpu());
  const RewardResult r = RewardLoss(h, {3, 9, 1, 4}, {7, 0, 5, 3}, w, 0.2);
  testing::ExpectCloseScaled({r.loss}, {want["loss"].get<double>()}, kTol, "reward loss");
  testing::ExpectCloseScaled(r.dh.ToDoubles(), Vec(want["dh"]), kTol, "reward dh");
  testing::ExpectCloseScaled(r.dw.ToDoubles(), Vec(want["dw"]), kTol, "reward dw");
  testing::ExpectCloseScaled({r.db}, {want["db"].get<double>()}, kTol, "reward db");
  EXPECT_EQ(r.accuracy, want["accuracy"].get<double>());
}

TEST_F(TorchOracleTest, SequenceLogProbsAndSftMatch) {
  const json& want = Out()["sequence"][0];
  Tensor logits = Tensor::FromHost(SeqLogits().data(), {3, 6, 11}, DType::kF64, Cpu());
  SequenceLogProbsResult r = SequenceLogProbs(logits, SeqTargets());
  testing::ExpectCloseScaled(r.sums, Vec(want["sums"]), kTol, "sums");
  Tensor dlogits;
  SequenceLogProbsBackward(logits, r.state, SeqCot(), &dlogits);
  testing::ExpectCloseScaled(dlogits.ToDoubles(), Vec(want["dlogits"]), kTol, "dlogits");
  testing::ExpectCloseScaled({SftLoss(r.sums, r.counts).loss}, {want["sft"].get<double>()}, kTol, "sft");
}

}  // namespace
}  // namespace pmol
