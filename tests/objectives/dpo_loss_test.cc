// DPO family: gradients wrt the policy log-probs against central finite differences in
// f64 (tolerance: objectives_test_util.h) for every loss type, IPO length-normalised,
// hinge away from its kink; closed-form values; stability at extreme margins; rewards,
// margins and accuracy.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/objectives/dpo_loss.h"
#include "tests/objectives/objectives_test_util.h"

namespace pmol {
namespace {

constexpr int kPairs = 6;

DpoInputs RandomInputs(std::mt19937& rng) {
  DpoInputs in;
  // Summed log-probs of responses of a few tokens: O(-10), with ratios O(1).
  in.ref_chosen = testing::Uniform(rng, kPairs, -20, -5);
  in.ref_rejected = testing::Uniform(rng, kPairs, -20, -5);
  const std::vector<double> dc = testing::Normal(rng, kPairs, 3.0), dr = testing::Normal(rng, kPairs, 3.0);
  for (int i = 0; i < kPairs; ++i) {
    in.policy_chosen.push_back(in.ref_chosen[i] + dc[i]);
    in.policy_rejected.push_back(in.ref_rejected[i] + dr[i]);
    in.chosen_tokens.push_back(1 + static_cast<int64_t>(rng() % 9));
    in.rejected_tokens.push_back(1 + static_cast<int64_t>(rng() % 9));
  }
  return in;
}

void CheckGradients(const DpoOptions& options, const DpoInputs& in, const std::string& what) {
  const DpoResult r = DpoLoss(options, in);
  std::vector<double> x = in.policy_chosen;
  x.insert(x.end(), in.policy_rejected.begin(), in.policy_rejected.end());
  auto loss = [&](const std::vector<double>& v) {
    DpoInputs p = in;
    p.policy_chosen.assign(v.begin(), v.begin() + kPairs);
    p.policy_rejected.assign(v.begin() + kPairs, v.end());
    return DpoLoss(options, p).loss;
  };
  std::vector<double> got = r.d_policy_chosen;
  got.insert(got.end(), r.d_policy_rejected.begin(), r.d_policy_rejected.end());
  testing::ExpectNear(got, testing::NumericGradient(loss, x), testing::kFdTolerance, what);
}

TEST(DpoLossTest, GradientsMatchFiniteDifferences) {
  for (double beta : {0.1, 0.5, 2.0}) {
    std::mt19937 rng(static_cast<unsigned>(beta * 100));
    const DpoInputs in = RandomInputs(rng);
    const std::string b = " beta=" + std::to_string(beta);
    CheckGradients({DpoOptions::kSigmoid, beta}, in, "sigmoid" + b);
    CheckGradients({DpoOptions::kIpo, beta}, in, "ipo" + b);
    CheckGradients({DpoOptions::kIpo, beta, 0, true}, in, "ipo length-normalised" + b);
    CheckGradients({DpoOptions::kConservative, beta, 0.1}, in, "conservative eps=0.1" + b);
    CheckGradients({DpoOptions::kConservative, beta, 0.3}, in, "conservative eps=0.3" + b);
    // Hinge: keep every pair at least 1e-3 away from the kink beta*delta = 1 (the step
    // is 1e-6, so the differences never straddle it).
    DpoInputs h = in;
    for (int i = 0; i < kPairs; ++i) {
      const double delta = (h.policy_chosen[i] - h.ref_chosen[i]) - (h.policy_rejected[i] - h.ref_rejected[i]);
      if (std::abs(1 - beta * delta) < 1e-3) h.policy_chosen[i] += 0.01 / beta;
    }
    CheckGradients({DpoOptions::kHinge, beta}, h, "hinge" + b);
  }
}

TEST(DpoLossTest, ClosedFormValues) {
  DpoInputs in;
  in.policy_chosen = {-3.0, -1.0};
  in.policy_rejected = {-4.0, -1.0};
  in.ref_chosen = {-4.0, -2.0};
  in.ref_rejected = {-3.0, -2.0};
  in.chosen_tokens = {2, 4};
  in.rejected_tokens = {4, 1};
  // deltas: (1) - (-1) = 2 and 1 - 1 = 0.
  const double beta = 0.5;
  DpoResult s = DpoLoss({DpoOptions::kSigmoid, beta}, in);
  EXPECT_NEAR(s.loss, 0.5 * (std::log1p(std::exp(-1.0)) + std::log(2.0)), 1e-15);
  EXPECT_NEAR(s.d_policy_chosen[1], -0.5 * beta * 0.5, 1e-15);
  DpoResult ipo = DpoLoss({DpoOptions::kIpo, beta}, in);
  EXPECT_NEAR(ipo.loss, 0.5 * ((2 - 1.0) * (2 - 1.0) + 1.0), 1e-15);
  // Length-normalised: pair 0: 1/2 - (-1/4) = 0.75, pair 1: 1/4 - 1 = -0.75.
  DpoResult ipon = DpoLoss({DpoOptions::kIpo, beta, 0, true}, in);
  EXPECT_NEAR(ipon.loss, 0.5 * (0.25 * 0.25 + 1.75 * 1.75), 1e-15);
  EXPECT_NEAR(ipon.margins[0], beta * 0.75, 1e-15);
  DpoResult hinge = DpoLoss({DpoOptions::kHinge, beta}, in);
  EXPECT_NEAR(hinge.loss, 0.5 * (0.0 + 1.0), 1e-15);
  EXPECT_EQ(hinge.d_policy_chosen[0], 0.0);  // at the kink 1 - beta*2 = 0: gradient 0
  EXPECT_NEAR(hinge.d_policy_chosen[1], -beta / 2, 1e-15);
  DpoResult c = DpoLoss({DpoOptions::kConservative, beta, 0.2}, in);
  EXPECT_NEAR(c.loss, 0.5 * (0.8 * std::log1p(std::exp(-1.0)) + 0.2 * std::log1p(std::exp(1.0)) + std::log(2.0)), 1e-15);
  // eps = 0: conservative is plain DPO.
  EXPECT_EQ(DpoLoss({DpoOptions::kConservative, beta, 0.0}, in).loss, s.loss);
}

TEST(DpoLossTest, RewardsMarginsAccuracy) {
  DpoInputs in;
  in.policy_chosen = {-3.0, -1.0, -5.0};
  in.policy_rejected = {-4.0, -1.0, -2.0};
  in.ref_chosen = {-4.0, -2.0, -5.0};
  in.ref_rejected = {-3.0, -2.0, -3.0};
  DpoResult r = DpoLoss({DpoOptions::kSigmoid, 0.1}, in);
  EXPECT_NEAR(r.rewards_chosen[0], 0.1, 1e-15);
  EXPECT_NEAR(r.rewards_rejected[0], -0.1, 1e-15);
  EXPECT_NEAR(r.margins[0], 0.2, 1e-15);
  EXPECT_EQ(r.correct, (std::vector<uint8_t>{1, 0, 0}));  // pair 1 ties: wrong
  EXPECT_NEAR(r.accuracy, 1.0 / 3, 1e-15);
}

TEST(DpoLossTest, StableAtExtremeMargins) {
  DpoInputs in;
  in.policy_chosen = {0.0, -5000.0};
  in.policy_rejected = {-5000.0, 0.0};
  in.ref_chosen = {0.0, 0.0};
  in.ref_rejected = {0.0, 0.0};
  for (auto loss : {DpoOptions::kSigmoid, DpoOptions::kConservative}) {
    DpoResult r = DpoLoss({loss, 1.0, 0.1}, in);
    EXPECT_TRUE(std::isfinite(r.loss));
    for (double d : r.d_policy_chosen) EXPECT_TRUE(std::isfinite(d));
  }
  DpoResult r = DpoLoss({DpoOptions::kSigmoid, 1.0}, in);
  EXPECT_NEAR(r.losses[1], 5000.0, 1e-9);
  EXPECT_EQ(r.losses[0], 0.0);
  EXPECT_NEAR(r.d_policy_chosen[1], -0.5, 1e-15);
}

TEST(DpoLossTest, NoPairs) {
  DpoResult r = DpoLoss({}, DpoInputs{});
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_TRUE(r.d_policy_chosen.empty());
}

}  // namespace
}  // namespace pmol
