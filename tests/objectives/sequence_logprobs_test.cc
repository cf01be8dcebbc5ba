// SequenceLogProbs: values against a naive long-double log-softmax, the backward against
// central finite differences in f64 (tolerance: objectives_test_util.h), the packed form,
// the mean form, the sums from per-position log-probs, the target builders, and f32 against f64 (tolerance 1e-5 relative: f32
// log-softmax over V = 7 logits of O(1) and sums of <= 5 terms, ~10 ulp of f32 with 10x
// headroom).
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/objectives/sequence_logprobs.h"
#include "tests/objectives/objectives_test_util.h"

namespace pmol {
namespace {

using testing::Cpu;

constexpr int64_t kRows = 3, kSeq = 5, kVocab = 7;

// Row 0: response from position 2 (targets at t = 1..3), row 1: full padding except a
// one-token response, row 2: no response at all.
std::vector<int32_t> Targets() {
  std::vector<int32_t> t(kRows * kSeq, -1);
  t[0 * kSeq + 1] = 3;
  t[0 * kSeq + 2] = 0;
  t[0 * kSeq + 3] = 6;
  t[1 * kSeq + 0] = 5;
  return t;
}

std::vector<double> NaiveSums(const std::vector<double>& logits, const std::vector<int32_t>& targets,
                              const std::vector<int32_t>& seq_of, int64_t num_seq) {
  std::vector<double> sums(num_seq, 0.0);
  for (int64_t i = 0; i < kRows * kSeq; ++i) {
    if (targets[i] < 0 || seq_of[i] < 0) continue;
    long double z = 0;
    for (int64_t v = 0; v < kVocab; ++v) z += std::exp(static_cast<long double>(logits[i * kVocab + v]));
    sums[seq_of[i]] += static_cast<double>(logits[i * kVocab + targets[i]] - std::log(z));
  }
  return sums;
}

TEST(SequenceLogProbsTest, ValuesCountsAndMeans) {
  std::mt19937 rng(1);
  std::vector<double> x = testing::Normal(rng, kRows * kSeq * kVocab, 2.0);
  Tensor logits = Tensor::FromHost(x.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
  const std::vector<int32_t> targets = Targets();
  SequenceLogProbsResult r = SequenceLogProbs(logits, targets);
  std::vector<int32_t> seq_of(kRows * kSeq);
  for (int64_t i = 0; i < kRows * kSeq; ++i) seq_of[i] = static_cast<int32_t>(i / kSeq);
  testing::ExpectNear(r.sums, NaiveSums(x, targets, seq_of, kRows), 1e-13, "sums");
  EXPECT_EQ(r.counts, (std::vector<int64_t>{3, 1, 0}));
  const std::vector<double> means = r.Means();
  EXPECT_DOUBLE_EQ(means[0], r.sums[0] / 3);
  EXPECT_DOUBLE_EQ(means[1], r.sums[1]);
  EXPECT_EQ(means[2], 0.0);
  EXPECT_EQ(r.sums[2], 0.0);
}

TEST(SequenceLogProbsTest, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(2);
  std::vector<double> x = testing::Normal(rng, kRows * kSeq * kVocab);
  const std::vector<double> cot = testing::Normal(rng, kRows);
  const std::vector<int32_t> targets = Targets();
  auto loss = [&](const std::vector<double>& v) {
    Tensor t = Tensor::FromHost(v.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
    SequenceLogProbsResult r = SequenceLogProbs(t, targets);
    double l = 0;
    for (int64_t s = 0; s < kRows; ++s) l += cot[s] * r.sums[s];
    return l;
  };
  Tensor logits = Tensor::FromHost(x.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
  SequenceLogProbsResult r = SequenceLogProbs(logits, targets);
  Tensor dlogits;
  SequenceLogProbsBackward(logits, r.state, cot, &dlogits);
  ASSERT_EQ(dlogits.shape(), logits.shape());
  testing::ExpectNear(dlogits.ToDoubles(), testing::NumericGradient(loss, x),
                      testing::kFdTolerance, "dlogits");
}

TEST(SequenceLogProbsTest, MeanGradientMatchesFiniteDifferences) {
  std::mt19937 rng(3);
  std::vector<double> x = testing::Normal(rng, kRows * kSeq * kVocab);
  const std::vector<double> cot = testing::Normal(rng, kRows);
  const std::vector<int32_t> targets = Targets();
  auto loss = [&](const std::vector<double>& v) {
    Tensor t = Tensor::FromHost(v.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
    const std::vector<double> means = SequenceLogProbs(t, targets).Means();
    double l = 0;
    for (int64_t s = 0; s < kRows; ++s) l += cot[s] * means[s];
    return l;
  };
  Tensor logits = Tensor::FromHost(x.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
  SequenceLogProbsResult r = SequenceLogProbs(logits, targets);
  Tensor dlogits;
  SequenceLogProbsBackward(logits, r.state, MeanGradToSumGrad(cot, r.counts), &dlogits);
  testing::ExpectNear(dlogits.ToDoubles(), testing::NumericGradient(loss, x),
                      testing::kFdTolerance, "dlogits of means");
}

TEST(SequenceLogProbsTest, PackedSequencesAndBackward) {
  std::mt19937 rng(4);
  std::vector<double> x = testing::Normal(rng, kRows * kSeq * kVocab);
  std::vector<int32_t> targets(kRows * kSeq);
  for (int32_t& t : targets) t = static_cast<int32_t>(rng() % kVocab);
  // Row 0 packs sequences 0 (t 0..1) and 1 (t 2..4); row 1 is sequence 2 with t 4 not
  // counted; row 2 is padding.
  std::vector<int32_t> seq_of = {0, 0, 1, 1, 1, 2, 2, 2, 2, -1, -1, -1, -1, -1, -1};
  const std::vector<double> cot = {0.7, -1.3, 0.4};
  auto loss = [&](const std::vector<double>& v) {
    Tensor t = Tensor::FromHost(v.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
    SequenceLogProbsResult r = SequenceLogProbs(t, targets, seq_of, 3);
    return cot[0] * r.sums[0] + cot[1] * r.sums[1] + cot[2] * r.sums[2];
  };
  Tensor logits = Tensor::FromHost(x.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
  SequenceLogProbsResult r = SequenceLogProbs(logits, targets, seq_of, 3);
  EXPECT_EQ(r.counts, (std::vector<int64_t>{2, 3, 4}));
  testing::ExpectNear(r.sums, NaiveSums(x, targets, seq_of, 3), 1e-13, "packed sums");
  Tensor dlogits;
  SequenceLogProbsBackward(logits, r.state, cot, &dlogits);
  testing::ExpectNear(dlogits.ToDoubles(), testing::NumericGradient(loss, x),
                      testing::kFdTolerance, "packed dlogits");
}

// From per-position log-probs (the chunked head's path): SumSequenceLogProbs gives the
// same sums and counts as SequenceLogProbs, uncounted positions (sequence -1, target -1)
// left out even when their log-prob is not 0; PositionLogProbGrads gives each counted
// position its sequence's dL/dsum and the others 0.
TEST(SequenceLogProbsTest, SumsFromPositionLogProbs) {
  const std::vector<int32_t> targets = {3, 1, -1, 6, 0, 2};
  const std::vector<int32_t> seq_of = {0, 0, 0, 1, -1, 2};
  const std::vector<int32_t> counted = CountedTargets(targets, seq_of, 3, kVocab);
  EXPECT_EQ(counted, (std::vector<int32_t>{3, 1, -1, 6, -1, 2}));
  const std::vector<double> logp = {-0.5, -1.25, -9.0, -2.0, -7.0, -0.125};
  const Tensor logp_t = Tensor::FromHost(logp.data(), {6}, DType::kF64, Cpu());
  const SequenceLogProbsResult r = SumSequenceLogProbs(logp_t, counted, seq_of, 3);
  EXPECT_EQ(r.sums, (std::vector<double>{-1.75, -2.0, -0.125}));
  EXPECT_EQ(r.counts, (std::vector<int64_t>{2, 1, 1}));
  const Tensor d = PositionLogProbGrads(r.state, {0.5, -3.0, 2.0}, Cpu(), DType::kF32);
  EXPECT_EQ(d.dtype(), DType::kF32);
  EXPECT_EQ(d.ToDoubles(), (std::vector<double>{0.5, 0.5, 0.5, -3.0, 0.0, 2.0}));
}

TEST(SequenceLogProbsTest, F32AgreesWithF64) {
  std::mt19937 rng(5);
  std::vector<double> x = testing::Normal(rng, kRows * kSeq * kVocab);
  const std::vector<int32_t> targets = Targets();
  Tensor l64 = Tensor::FromHost(x.data(), {kRows, kSeq, kVocab}, DType::kF64, Cpu());
  Tensor l32 = l64.ConvertTo(DType::kF32);
  SequenceLogProbsResult r64 = SequenceLogProbs(l64, targets);
  SequenceLogProbsResult r32 = SequenceLogProbs(l32, targets);
  testing::ExpectNear(r32.sums, r64.sums, 1e-5, "f32 sums");
  const std::vector<double> cot = {1.0, -2.0, 0.5};
  Tensor d64, d32;
  SequenceLogProbsBackward(l64, r64.state, cot, &d64);
  SequenceLogProbsBackward(l32, r32.state, cot, &d32);
  EXPECT_EQ(d32.dtype(), DType::kF32);
  testing::ExpectNear(d32.ToDoubles(), d64.ToDoubles(), 1e-5, "f32 dlogits");
}

TEST(SequenceLogProbsTest, ResponseTargetsFromStartAndLength) {
  // Row 0: prompt 0..1, response 2..4, padding 5. Row 1: prompt 0, response 1..5 (full).
  const std::vector<int32_t> tokens = {10, 11, 12, 13, 14, 0,
                                       20, 21, 22, 23, 24, 25};
  const std::vector<int32_t> t = ResponseTargets(tokens, 2, 6, {2, 1}, {5, 6});
  EXPECT_EQ(t, (std::vector<int32_t>{-1, 12, 13, 14, -1, -1,
                                     21, 22, 23, 24, 25, -1}));
}

}  // namespace
}  // namespace pmol
