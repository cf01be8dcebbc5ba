// SFT cross-entropy (on SequenceLogProbs) and the Bradley-Terry reward loss: gradients
// against central finite differences in f64 (tolerance: objectives_test_util.h), values
// in closed form, accuracy, and the row bookkeeping of the reward head.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/objectives/reward_loss.h"
#include "pmol/objectives/sequence_logprobs.h"
#include "pmol/objectives/sft_loss.h"
#include "tests/objectives/objectives_test_util.h"

namespace pmol {
namespace {

using testing::Cpu;

TEST(SftLossTest, TokenMeanAndGradientThroughLogits) {
  constexpr int64_t kRows = 2, kSeq = 4, kVocab = 5;
  std::mt19937 rng(11);
  std::vector<double> x = testing::Normal(rng, kRows * kSeq * kVocab);
  const std::vector<int32_t> targets = {-1, 2, 4, -1,
                                        1, 0, 3, -1};
  auto loss = [&](const std::vector<double>& v) {
    Tensor t = Tensor::FromHost(v.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
    SequenceLogProbsResult r = SequenceLogProbs(t, targets);
    return SftLoss(r.sums, r.counts).loss;
  };
  Tensor logits = Tensor::FromHost(x.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
  SequenceLogProbsResult r = SequenceLogProbs(logits, targets);
  SftResult sft = SftLoss(r.sums, r.counts);
  EXPECT_EQ(sft.tokens, 5);
  EXPECT_NEAR(sft.loss, -(r.sums[0] + r.sums[1]) / 5, 1e-15);
  EXPECT_EQ(sft.d_sums, (std::vector<double>{-0.2, -0.2}));
  Tensor dlogits;
  SequenceLogProbsBackward(logits, r.state, sft.d_sums, &dlogits);
  testing::ExpectNear(dlogits.ToDoubles(), testing::NumericGradient(loss, x),
                      testing::kFdTolerance, "sft dlogits");
  SftResult none = SftLoss({0.0}, {0});
  EXPECT_EQ(none.loss, 0.0);
  EXPECT_EQ(none.d_sums, (std::vector<double>{0.0}));
}

constexpr int64_t kFlatRows = 8, kHidden = 5;

TEST(RewardLossTest, GradientsMatchFiniteDifferences) {
  std::mt19937 rng(12);
  const std::vector<double> h = testing::Normal(rng, kFlatRows * kHidden);
  const std::vector<double> w = testing::Normal(rng, kHidden, 0.5);
  const double b = 0.3;
  // Two rows of length 4 (flat rows 0..3, 4..7) per side would be typical; here three
  // pairs whose last tokens are scattered, one flat row shared by two pairs.
  const std::vector<int64_t> chosen = {3, 5, 1}, rejected = {6, 3, 7};
  auto run = [&](const std::vector<double>& hh, const std::vector<double>& ww, double bb) {
    return RewardLoss(Tensor::FromHost(hh.data(), {kFlatRows, kHidden}, DType::kF64, Cpu()), chosen,
                      rejected, Tensor::FromHost(ww.data(), {kHidden}, DType::kF64, Cpu()), bb);
  };
  const RewardResult r = run(h, w, b);
  testing::ExpectNear(r.dh.ToDoubles(),
                      testing::NumericGradient([&](const std::vector<double>& v) { return run(v, w, b).loss; }, h),
                      testing::kFdTolerance, "dh");
  testing::ExpectNear(r.dw.ToDoubles(),
                      testing::NumericGradient([&](const std::vector<double>& v) { return run(h, v, b).loss; }, w),
                      testing::kFdTolerance, "dw");
  const std::vector<double> db = testing::NumericGradient(
      [&](const std::vector<double>& v) { return run(h, w, v[0]).loss; }, {b});
  EXPECT_NEAR(r.db, db[0], testing::kFdTolerance);
  // b cancels in every difference: its gradient is exactly zero.
  EXPECT_EQ(r.db, 0.0);
  // Rows never named get no gradient.
  const std::vector<double> dh = r.dh.ToDoubles();
  for (int64_t row : {0, 2, 4})
    for (int64_t j = 0; j < kHidden; ++j) EXPECT_EQ(dh[row * kHidden + j], 0.0);
}

TEST(RewardLossTest, ValuesAndAccuracy) {
  // h rows are one-hot so rewards are w entries plus b.
  std::vector<double> h(4 * 3, 0.0);
  for (int r = 0; r < 3; ++r) h[r * 3 + r] = 1.0;
  const std::vector<double> w = {2.0, 1.0, -1.0};
  RewardResult res = RewardLoss(Tensor::FromHost(h.data(), {4, 3}, DType::kF64, Cpu()), {0, 2},
                                {1, 3}, Tensor::FromHost(w.data(), {3}, DType::kF64, Cpu()), 0.5);
  EXPECT_EQ(res.rewards_chosen, (std::vector<double>{2.5, -0.5}));
  EXPECT_EQ(res.rewards_rejected, (std::vector<double>{1.5, 0.5}));
  EXPECT_NEAR(res.loss, 0.5 * (std::log1p(std::exp(-1.0)) + std::log1p(std::exp(1.0))), 1e-15);
  EXPECT_EQ(res.accuracy, 0.5);
  EXPECT_EQ(LastTokenRows({3, 1, 4}, 4), (std::vector<int64_t>{2, 4, 11}));
}

}  // namespace
}  // namespace pmol
