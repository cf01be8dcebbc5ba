// PMoL router losses through RouterLossBatch on the CPU backend: group soft loss and balance
// loss gradients wrt every router weight (experts and empty slots) against central finite
// differences in f64 (tolerance: objectives_test_util.h) over many layouts (1-4 groups, 1-3
// experts per group differing per group, 0-2 empty experts, eps 0 and 0.1); closed-form
// values; the invariance of the router-logit gradient to the choice of normaliser; a batch
// of several modules against each module alone; router group mass and slot sums against
// direct sums.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/objectives/router_losses.h"
#include "tests/objectives/objectives_test_util.h"
#include "tests/objectives/router_losses_test_util.h"

namespace pmol {
namespace {

using testing::BalanceLossOf;
using testing::Cpu;
using testing::GroupSoftLossOf;

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
        return GroupSoftLossOf(layout, v, labels, eps, 1.0, nullptr);
      };
      const double scale = 0.37;
      std::vector<double> dg(kPositions * slots, 0.0);
      const double value = GroupSoftLossOf(layout, g, labels, eps, scale, &dg);
      EXPECT_EQ(value, loss(g));
      std::vector<double> want = testing::NumericGradient(loss, g);
      for (double& w : want) w *= scale;
      testing::ExpectNear(dg, want, testing::kFdTolerance,
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
  EXPECT_NEAR(GroupSoftLossOf(layout, g, {1, -1}, 0.1, 1.0, nullptr), std::log(2.0), 1e-15);
  // eps = 0: CE = -log m_1 with m_1 = 0.3 / 0.6.
  std::vector<double> dg(2 * 4, 0.0);
  GroupSoftLossOf(layout, g, {1, -1}, 0.0, 1.0, &dg);
  const std::vector<double>& d = dg;
  EXPECT_EQ(d[0], 0.0);
  EXPECT_EQ(d[1], 0.0);
  EXPECT_NEAR(d[2], -1 / 0.3, 1e-14);
  EXPECT_NEAR(d[3], -1 / 0.6, 1e-14);
  for (int s = 4; s < 8; ++s) EXPECT_EQ(d[s], 0.0);
  // No labelled position: 0 and no gradient.
  std::vector<double> dz(2 * 4, 0.0);
  EXPECT_EQ(GroupSoftLossOf(layout, g, {-1, -1}, 0.1, 1.0, &dz), 0.0);
  for (double v : dz) EXPECT_EQ(v, 0.0);
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
      return GroupSoftLossOf(layout, softmax(zz), labels, 0.1, 1.0, nullptr);
    };
    const std::vector<double> g = softmax(z);
    std::vector<double> dg(kPositions * slots, 0.0);
    GroupSoftLossOf(layout, g, labels, 0.1, 1.0, &dg);
    const std::vector<double> dgv = dg;
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
      return BalanceLossOf(layout, v, valid, 1.0, nullptr);
    };
    const double scale = 1.7;
    std::vector<double> dg(kPositions * slots, 0.0);
    const double value = BalanceLossOf(layout, g, valid, scale, &dg);
    EXPECT_EQ(value, loss(g));
    std::vector<double> want = testing::NumericGradient(loss, g);
    for (double& w : want) w *= scale;
    testing::ExpectNear(dg, want, testing::kFdTolerance, Name(layout));
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
    std::vector<double> dg(kPositions * slots, 0.0);
    std::vector<double> dexp(rows * slots, 0.0);
    const double weighted = BalanceLossOf(layout, g, weight, 1.0, &dg);
    const double dup = BalanceLossOf(layout, expanded,
                                   std::vector<uint8_t>(rows, 1), 1.0, &dexp);
    EXPECT_NEAR(weighted, dup, 1e-14 * (1 + std::abs(dup))) << Name(layout);
    std::vector<double> want(kPositions * slots, 0.0);
    const std::vector<double> de = dexp;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t s2 = 0; s2 < slots; ++s2) want[source[r] * slots + s2] += de[r * slots + s2];
    testing::ExpectNear(dg, want, 1e-12, Name(layout) + " vs duplicated rows");
    auto loss = [&](const std::vector<double>& v) {
      return BalanceLossOf(layout, v, weight, 1.0, nullptr);
    };
    testing::ExpectNear(dg, testing::NumericGradient(loss, g), testing::kFdTolerance,
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
  EXPECT_NEAR(BalanceLossOf(layout, g, {1, 0, 1}, 1.0, nullptr), 0.04 / 2, 1e-15);
  // Perfectly balanced and all-invalid cases give 0.
  EXPECT_EQ(BalanceLossOf(layout, g, {0, 0, 0}, 1.0, nullptr), 0.0);
  const std::vector<double> even = {0.3, 0.3, 0.2, 0.2};
  EXPECT_NEAR(BalanceLossOf(layout, even, {1}, 1.0, nullptr), 0.0, 1e-30);
}

// Several modules in one batch: each module's figures and gradient are those of the module
// alone (L_group and L_bal gradients summed into one buffer), a module given no gradient
// buffer is skipped, and the slot sums, positions and router mass are the direct sums.
// Tolerance 1e-14 relative: the same f64 math, with sums over positions that may be
// ordered differently by the BLAS GEMMs (~1e-16 per addition over 9 rows).
TEST(RouterLossesTest, BatchOfModulesMatchesEachModuleAlone) {
  const ExpertLayout layout{{2, 3, 1}, 2, 4};
  const int64_t slots = layout.num_slots(), groups = layout.num_groups(), n = 9;
  std::mt19937 rng(21);
  const std::vector<int32_t> labels = {0, 2, -1, 1, 1, -1, 0, 2, 2};
  const std::vector<uint8_t> weight = {1, 2, 0, 1, 2, 1, 0, 1, 1};
  const int64_t modules = 3;
  std::vector<std::vector<double>> g(modules);
  std::vector<Tensor> gt, dg;
  RouterLossBatch batch(layout, labels, weight, modules, Cpu());
  std::vector<Tensor*> dgs;
  for (int64_t j = 0; j < modules; ++j) {
    g[j] = SoftmaxRows(rng, n, slots);
    gt.push_back(Tensor::FromHost(g[j].data(), {n, slots}, DType::kF64, Cpu()));
    dg.push_back(Tensor::Empty({n, slots}, DType::kF64, Cpu()));
  }
  for (int64_t j = 0; j < modules; ++j) {
    batch.AddModule(j, gt[j], 0.1, 0.5, j == 1 ? nullptr : &dg[j]);
    dgs.push_back(j == 1 ? nullptr : &dg[j]);
  }
  batch.Finish(0.25, dgs);
  const RouterLossFigures f = batch.Read();
  ASSERT_EQ(f.group.size(), 3u);
  EXPECT_EQ(f.positions, (std::vector<int64_t>{2, 2, 3, 7}));
  for (int64_t j = 0; j < modules; ++j) {
    const std::string what = "module " + std::to_string(j);
    std::vector<double> want(n * slots, 0.0);
    const double group = GroupSoftLossOf(layout, g[j], labels, 0.1, 0.5, &want);
    const double balance = BalanceLossOf(layout, g[j], weight, 0.25, &want);
    testing::ExpectNear({f.group[j]}, {group}, 1e-14, what + " L_group");
    testing::ExpectNear({f.balance[j]}, {balance}, 1e-14, what + " L_bal");
    if (j != 1) testing::ExpectNear(dg[j].ToDoubles(), want, 1e-14, what + " dg");
    // Slot sums: per preference over its positions, then weighted over all.
    for (int64_t p = 0; p <= groups; ++p) {
      std::vector<double> sums(slots, 0.0);
      for (int64_t r = 0; r < n; ++r) {
        const double w = p < groups ? (labels[r] == p ? 1.0 : 0.0) : weight[r];
        for (int64_t s = 0; s < slots; ++s) sums[s] += w * g[j][r * slots + s];
      }
      const double* got = f.SlotSums(j, p);
      testing::ExpectNear(std::vector<double>(got, got + slots), sums, 1e-14,
                          what + " slot sums " + std::to_string(p));
      if (p == groups) {
        EXPECT_NEAR(BalanceLossOfSlotSums(layout, sums), balance, 1e-14 * (1 + balance)) << what;
      }
    }
    // Router mass over every labelled position: group k's mean mass, then the empties'.
    std::vector<double> mass(groups + 1, 0.0);
    for (int64_t r = 0; r < n; ++r) {
      if (labels[r] < 0) continue;
      for (int64_t s = 0; s < slots; ++s) {
        mass[s < layout.num_experts() ? layout.group_of(s) : groups] += g[j][r * slots + s] / 7;
      }
    }
    testing::ExpectNear(f.GroupMass(layout, j, groups), mass, 1e-14, what + " mass");
  }
}

TEST(RouterLossesTest, RouterGroupMass) {
  const ExpertLayout layout{{2, 1}, 1, 4};
  const std::vector<double> g = {0.1, 0.2, 0.3, 0.4,
                                 0.9, 0.0, 0.05, 0.05,
                                 0.3, 0.4, 0.2, 0.1};
  // Rows 0 and 2 are labelled 1, row 1 is not labelled.
  RouterLossBatch batch(layout, {1, -1, 1}, {1, 1, 1}, 1, Cpu());
  batch.AddModule(0, Tensor::FromHost(g.data(), {3, 4}, DType::kF64, Cpu()), 0.0, 1.0, nullptr);
  batch.Finish(1.0, {});
  const RouterLossFigures f = batch.Read();
  for (int64_t p : {1, 2}) {  // preference 1, and every labelled position: the same rows
    const std::vector<double> m = f.GroupMass(layout, 0, p);
    ASSERT_EQ(m.size(), 3u);
    EXPECT_NEAR(m[0], (0.3 + 0.7) / 2, 1e-15);
    EXPECT_NEAR(m[1], (0.3 + 0.2) / 2, 1e-15);
    EXPECT_NEAR(m[2], (0.4 + 0.1) / 2, 1e-15);
  }
  for (double v : f.GroupMass(layout, 0, 0)) EXPECT_EQ(v, 0.0);  // no position of preference 0
}

}  // namespace
}  // namespace pmol
