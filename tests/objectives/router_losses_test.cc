// PMoL router losses: group soft loss and balance loss gradients wrt every router weight
// (experts and empty slots) against central finite differences in f64 (tolerance:
// objectives_test_util.h) over many layouts (1-4 groups, 1-3 experts per group differing
// per group, 0-2 empty experts, eps 0 and 0.1); closed-form values; the invariance of the
// router-logit gradient to the choice of normaliser; f32 tensors; router group mass.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/objectives/router_losses.h"
#include "tests/objectives/objectives_test_util.h"

namespace pmol {
namespace {

using testing::Cpu;

std::vector<ExpertLayout> Layouts() {
  return {
      {{1}, 0, 4},          {{2}, 1, 4},          {{1, 1}, 0, 4},     {{2, 3}, 1, 4},
      {{3, 1, 2}, 2, 4},    {{1, 2, 3, 2}, 1, 4}, {{2, 2, 2, 2}, 0, 4}, {{3, 3}, 2, 4},
      {{1, 3, 1, 2}, 2, 4},
  };
}

std::string Name(const ExpertLayout& l) {
  std::string s = "groups{";
  for (int32_t e : l.experts_per_group) s += std::to_string(e) + ",";
  return s + "} empty=" + std::to_string(l.num_empty);
}

// Softmax rows of N(0, 1) logits: positive, summing to one, no slot below ~0.02 for the
// sizes used here (keeps the finite-difference truncation error of log s small).
std::vector<double> SoftmaxRows(std::mt19937& rng, int64_t rows, int64_t slots) {
  std::vector<double> z = testing::Normal(rng, rows * slots, 0.7), g(rows * slots);
  for (int64_t n = 0; n < rows; ++n) {
    double sum = 0;
    for (int64_t s = 0; s < slots; ++s) sum += g[n * slots + s] = std::exp(z[n * slots + s]);
    for (int64_t s = 0; s < slots; ++s) g[n * slots + s] /= sum;
  }
  return g;
}

Tensor F64(const std::vector<double>& v, const Shape& shape) {
  return Tensor::FromHost(v.data(), shape, DType::kF64, Cpu());
}

constexpr int64_t kPositions = 7;

TEST(RouterLossesTest, GroupSoftLossGradientMatchesFiniteDifferences) {
  for (const ExpertLayout& layout : Layouts()) {
    for (double eps : {0.0, 0.1}) {
      std::mt19937 rng(layout.num_slots() * 31 + layout.num_groups());
      const int64_t slots = layout.num_slots();
      const std::vector<double> g = SoftmaxRows(rng, kPositions, slots);
      std::vector<int32_t> labels(kPositions);
      for (int64_t n = 0; n < kPositions; ++n)
        labels[n] = n % 3 == 2 ? -1 : static_cast<int32_t>(rng() % layout.num_groups());
      auto loss = [&](const std::vector<double>& v) {
        return GroupSoftLoss(layout, F64(v, {kPositions, slots}), labels, eps, 1.0, nullptr);
      };
      const double scale = 0.37;
      Tensor dg = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
      const double value = GroupSoftLoss(layout, F64(g, {kPositions, slots}), labels, eps, scale, &dg);
      EXPECT_EQ(value, loss(g));
      std::vector<double> want = testing::NumericGradient(loss, g);
      for (double& w : want) w *= scale;
      testing::ExpectNear(dg.ToDoubles(), want, testing::kFdTolerance,
                          Name(layout) + " eps=" + std::to_string(eps));
    }
  }
}

TEST(RouterLossesTest, GroupSoftLossClosedForm) {
  // Two groups {2, 1} and one empty slot; position 0 label 1, position 1 unlabelled.
  const ExpertLayout layout{{2, 1}, 1, 4};
  const std::vector<double> g = {0.1, 0.2, 0.3, 0.4,
                                 0.25, 0.25, 0.25, 0.25};
  // m = (0.3, 0.3) / 0.6 = (0.5, 0.5); y = (0.05, 0.95): CE = log 2.
  EXPECT_NEAR(GroupSoftLoss(layout, F64(g, {2, 4}), {1, -1}, 0.1, 1.0, nullptr), std::log(2.0), 1e-15);
  // eps = 0: CE = -log m_1 with m_1 = 0.3 / 0.6.
  Tensor dg = Tensor::Zeros({2, 4}, DType::kF64, Cpu());
  GroupSoftLoss(layout, F64(g, {2, 4}), {1, -1}, 0.0, 1.0, &dg);
  const std::vector<double> d = dg.ToDoubles();
  EXPECT_EQ(d[0], 0.0);
  EXPECT_EQ(d[1], 0.0);
  EXPECT_NEAR(d[2], -1 / 0.3, 1e-14);
  EXPECT_NEAR(d[3], -1 / 0.6, 1e-14);
  for (int s = 4; s < 8; ++s) EXPECT_EQ(d[s], 0.0);
  // No labelled position: 0 and no gradient.
  Tensor dz = Tensor::Zeros({2, 4}, DType::kF64, Cpu());
  EXPECT_EQ(GroupSoftLoss(layout, F64(g, {2, 4}), {-1, -1}, 0.1, 1.0, &dz), 0.0);
  for (double v : dz.ToDoubles()) EXPECT_EQ(v, 0.0);
}

// The gradient at the router logits z (g = softmax(z)) does not depend on whether the
// normaliser is written 1 - e or sum_k s_k: check dL/dz from our dg against finite
// differences of the loss as a function of z.
TEST(RouterLossesTest, GroupSoftLossLogitGradientMatchesFiniteDifferences) {
  for (const ExpertLayout& layout : Layouts()) {
    std::mt19937 rng(layout.num_slots() * 7 + 3);
    const int64_t slots = layout.num_slots();
    const std::vector<double> z = testing::Normal(rng, kPositions * slots, 0.7);
    auto softmax = [&](const std::vector<double>& zz) {
      std::vector<double> g(zz.size());
      for (int64_t n = 0; n < kPositions; ++n) {
        double sum = 0;
        for (int64_t s = 0; s < slots; ++s) sum += g[n * slots + s] = std::exp(zz[n * slots + s]);
        for (int64_t s = 0; s < slots; ++s) g[n * slots + s] /= sum;
      }
      return g;
    };
    std::vector<int32_t> labels(kPositions);
    for (int32_t& p : labels) p = static_cast<int32_t>(rng() % layout.num_groups());
    auto loss = [&](const std::vector<double>& zz) {
      return GroupSoftLoss(layout, F64(softmax(zz), {kPositions, slots}), labels, 0.1, 1.0, nullptr);
    };
    const std::vector<double> g = softmax(z);
    Tensor dg = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
    GroupSoftLoss(layout, F64(g, {kPositions, slots}), labels, 0.1, 1.0, &dg);
    const std::vector<double> dgv = dg.ToDoubles();
    std::vector<double> dz(z.size());
    for (int64_t n = 0; n < kPositions; ++n) {
      double dot = 0;
      for (int64_t s = 0; s < slots; ++s) dot += g[n * slots + s] * dgv[n * slots + s];
      for (int64_t s = 0; s < slots; ++s) dz[n * slots + s] = g[n * slots + s] * (dgv[n * slots + s] - dot);
    }
    testing::ExpectNear(dz, testing::NumericGradient(loss, z), testing::kFdTolerance, Name(layout));
  }
}

TEST(RouterLossesTest, BalanceLossGradientMatchesFiniteDifferences) {
  for (const ExpertLayout& layout : Layouts()) {
    std::mt19937 rng(layout.num_slots() * 13 + layout.num_groups());
    const int64_t slots = layout.num_slots();
    const std::vector<double> g = SoftmaxRows(rng, kPositions, slots);
    const std::vector<uint8_t> valid = {1, 1, 0, 1, 1, 1, 0};
    auto loss = [&](const std::vector<double>& v) {
      return BalanceLoss(layout, F64(v, {kPositions, slots}), valid, 1.0, nullptr);
    };
    const double scale = 1.7;
    Tensor dg = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
    const double value = BalanceLoss(layout, F64(g, {kPositions, slots}), valid, scale, &dg);
    EXPECT_EQ(value, loss(g));
    std::vector<double> want = testing::NumericGradient(loss, g);
    for (double& w : want) w *= scale;
    testing::ExpectNear(dg.ToDoubles(), want, testing::kFdTolerance, Name(layout));
  }
}

TEST(RouterLossesTest, BalanceLossWeightCountsAPositionThatManyTimes) {
  // A shared prompt token stands for two positions: weight 2 on one row must give the
  // loss of that row written twice, and the gradient of both copies on the one row (the
  // sum of the duplicated rows' gradients). Also checked against finite differences.
  for (const ExpertLayout& layout : Layouts()) {
    std::mt19937 rng(layout.num_slots() * 7 + 3);
    const int64_t slots = layout.num_slots();
    const std::vector<double> g = SoftmaxRows(rng, kPositions, slots);
    const std::vector<uint8_t> weight = {2, 1, 0, 2, 1, 1, 0};
    std::vector<double> expanded;
    std::vector<int64_t> source;  // expanded row -> row of g
    for (int64_t n = 0; n < kPositions; ++n)
      for (int c = 0; c < weight[n]; ++c) {
        expanded.insert(expanded.end(), g.begin() + n * slots, g.begin() + (n + 1) * slots);
        source.push_back(n);
      }
    const int64_t rows = static_cast<int64_t>(source.size());
    Tensor dg = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
    Tensor dexp = Tensor::Zeros({rows, slots}, DType::kF64, Cpu());
    const double weighted = BalanceLoss(layout, F64(g, {kPositions, slots}), weight, 1.0, &dg);
    const double dup = BalanceLoss(layout, F64(expanded, {rows, slots}),
                                   std::vector<uint8_t>(rows, 1), 1.0, &dexp);
    EXPECT_NEAR(weighted, dup, 1e-14 * (1 + std::abs(dup))) << Name(layout);
    std::vector<double> want(kPositions * slots, 0.0);
    const std::vector<double> de = dexp.ToDoubles();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t s2 = 0; s2 < slots; ++s2) want[source[r] * slots + s2] += de[r * slots + s2];
    testing::ExpectNear(dg.ToDoubles(), want, 1e-12, Name(layout) + " vs duplicated rows");
    auto loss = [&](const std::vector<double>& v) {
      return BalanceLoss(layout, F64(v, {kPositions, slots}), weight, 1.0, nullptr);
    };
    testing::ExpectNear(dg.ToDoubles(), testing::NumericGradient(loss, g), testing::kFdTolerance,
                        Name(layout) + " vs finite differences");
  }
}

TEST(RouterLossesTest, BalanceLossClosedForm) {
  // Groups {2, 1}, one empty. Masses over valid rows: expert 0: 0.1+0.3 = 0.4,
  // expert 1: 0.2+0.4 = 0.6 -> mu 0.5, var 0.01, CV2 0.04; group 1 (one expert) 0.
  const ExpertLayout layout{{2, 1}, 1, 4};
  const std::vector<double> g = {0.1, 0.2, 0.3, 0.4,
                                 0.9, 0.0, 0.05, 0.05,
                                 0.3, 0.4, 0.2, 0.1};
  EXPECT_NEAR(BalanceLoss(layout, F64(g, {3, 4}), {1, 0, 1}, 1.0, nullptr), 0.04 / 2, 1e-15);
  // Perfectly balanced and all-invalid cases give 0.
  EXPECT_EQ(BalanceLoss(layout, F64(g, {3, 4}), {0, 0, 0}, 1.0, nullptr), 0.0);
  const std::vector<double> even = {0.3, 0.3, 0.2, 0.2};
  EXPECT_NEAR(BalanceLoss(layout, F64(even, {1, 4}), {1}, 1.0, nullptr), 0.0, 1e-30);
}

TEST(RouterLossesTest, F32TensorsAccumulate) {
  const ExpertLayout layout{{2, 3}, 1, 4};
  std::mt19937 rng(9);
  const int64_t slots = layout.num_slots();
  const std::vector<double> g = SoftmaxRows(rng, kPositions, slots);
  std::vector<int32_t> labels(kPositions, 1);
  labels[0] = 0;
  const std::vector<uint8_t> valid(kPositions, 1);
  Tensor g64 = F64(g, {kPositions, slots});
  Tensor g32 = g64.ConvertTo(DType::kF32);
  Tensor d64 = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
  Tensor d32 = Tensor::Zeros({kPositions, slots}, DType::kF32, Cpu());
  // Both losses accumulate into one gradient buffer.
  const double l64 = GroupSoftLoss(layout, g64, labels, 0.1, 0.5, &d64) +
                     BalanceLoss(layout, g64, valid, 0.25, &d64);
  const double l32 = GroupSoftLoss(layout, g32, labels, 0.1, 0.5, &d32) +
                     BalanceLoss(layout, g32, valid, 0.25, &d32);
  // f32 inputs (rounded at 6e-8 relative) and an f32 gradient: 1e-5 is ~100 ulp.
  EXPECT_NEAR(l32, l64, 1e-5);
  testing::ExpectNear(d32.ToDoubles(), d64.ToDoubles(), 1e-5, "f32 dg");
  // Accumulation: the shared buffer is the sum of the two separate gradients.
  Tensor da = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
  Tensor db = Tensor::Zeros({kPositions, slots}, DType::kF64, Cpu());
  GroupSoftLoss(layout, g64, labels, 0.1, 0.5, &da);
  BalanceLoss(layout, g64, valid, 0.25, &db);
  std::vector<double> sum = da.ToDoubles();
  const std::vector<double> b = db.ToDoubles();
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += b[i];
  testing::ExpectNear(d64.ToDoubles(), sum, 1e-15, "accumulation");
}

TEST(RouterLossesTest, RouterGroupMass) {
  const ExpertLayout layout{{2, 1}, 1, 4};
  const std::vector<double> g = {0.1, 0.2, 0.3, 0.4,
                                 0.9, 0.0, 0.05, 0.05,
                                 0.3, 0.4, 0.2, 0.1};
  const std::vector<double> m = RouterGroupMass(layout, F64(g, {3, 4}), {1, 0, 1});
  ASSERT_EQ(m.size(), 3u);
  EXPECT_NEAR(m[0], (0.3 + 0.7) / 2, 1e-15);
  EXPECT_NEAR(m[1], (0.3 + 0.2) / 2, 1e-15);
  EXPECT_NEAR(m[2], (0.4 + 0.1) / 2, 1e-15);
  for (double v : RouterGroupMass(layout, F64(g, {3, 4}), {0, 0, 0})) EXPECT_EQ(v, 0.0);
}

}  // namespace
}  // namespace pmol
