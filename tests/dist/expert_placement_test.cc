// PlaceExpertGroups and PreferenceAwareOrder (dist/expert_placement.h).
#include "dist/expert_placement.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace pmol::dist {
namespace {

using Experts = std::vector<std::vector<int32_t>>;

// Every expert 0..total-1 is held by exactly one rank, each rank's list ascending and
// non-empty, and each group's home rank holds its first expert.
void ExpectValidPlacement(const ExpertPlacement& p, const std::vector<int32_t>& experts_per_group, int ep) {
  ASSERT_EQ(p.ep, ep);
  ASSERT_EQ(static_cast<int>(p.experts_of_rank.size()), ep);
  ASSERT_EQ(p.home_rank_of_group.size(), experts_per_group.size());
  const int total = std::accumulate(experts_per_group.begin(), experts_per_group.end(), 0);
  std::vector<int> owner(total, -1);
  for (int e = 0; e < ep; ++e) {
    EXPECT_FALSE(p.experts_of_rank[e].empty()) << "rank " << e;
    EXPECT_TRUE(std::is_sorted(p.experts_of_rank[e].begin(), p.experts_of_rank[e].end())) << "rank " << e;
    for (int32_t x : p.experts_of_rank[e]) {
      ASSERT_GE(x, 0);
      ASSERT_LT(x, total);
      EXPECT_EQ(owner[x], -1) << "expert " << x << " held twice";
      owner[x] = e;
    }
  }
  for (int x = 0; x < total; ++x) EXPECT_NE(owner[x], -1) << "expert " << x << " held by no rank";
  for (size_t k = 0, first = 0; k < experts_per_group.size(); first += experts_per_group[k], ++k) {
    EXPECT_EQ(p.home_rank_of_group[k], owner[first]) << "group " << k;
  }
}

ExpertPlacement Place(const std::vector<int32_t>& groups, const std::vector<double>& load, int ep) {
  absl::StatusOr<ExpertPlacement> p = PlaceExpertGroups(groups, load, ep);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  ExpectValidPlacement(*p, groups, ep);
  return *p;
}

TEST(PlaceExpertGroupsTest, EqualGroupsSplitEvenlyAndAligned) {
  ExpertPlacement p = Place({2, 2, 2, 2}, {}, 2);
  // g0 -> r0, g1 -> r1, g2 -> r0 (2 experts each, r0 is the lower index), g3 -> r1.
  EXPECT_EQ(p.experts_of_rank, (Experts{{0, 1, 4, 5}, {2, 3, 6, 7}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{0, 1, 0, 1}));
}

TEST(PlaceExpertGroupsTest, LargestGroupFirstThenFewestExperts) {
  ExpertPlacement p = Place({4, 1, 1}, {}, 2);
  EXPECT_EQ(p.experts_of_rank, (Experts{{0, 1, 2, 3}, {4, 5}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{0, 1, 1}));
}

TEST(PlaceExpertGroupsTest, LargestGroupIsPlacedFirstEvenWhenLast) {
  // Order (count desc): g2 (3) -> r0, g0 (1) -> r1, g1 (1) -> r1 (1 expert < 3).
  ExpertPlacement p = Place({1, 1, 3}, {}, 2);
  EXPECT_EQ(p.experts_of_rank, (Experts{{2, 3, 4}, {0, 1}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{1, 1, 0}));
}

TEST(PlaceExpertGroupsTest, LoadsBreakTies) {
  // Order (load desc): g1 (0.6) -> r0; g2 (0.3) -> r1 (0 experts); g0 (0.1): both ranks
  // hold 1 expert, r1's load 0.3 < r0's 0.6 -> r1.
  ExpertPlacement p = Place({1, 1, 1}, {0.1, 0.6, 0.3}, 2);
  EXPECT_EQ(p.experts_of_rank, (Experts{{1}, {0, 2}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{1, 0, 1}));
  // Uniform load: index order, g0 -> r0, g1 -> r1, g2 -> r0 (tie, lower index).
  ExpertPlacement u = Place({1, 1, 1}, {}, 2);
  EXPECT_EQ(u.experts_of_rank, (Experts{{0, 2}, {1}}));
}

TEST(PlaceExpertGroupsTest, LoadsDoNotOverrideExpertCounts) {
  // g0 has 2 experts and is placed first despite the smallest load: g0 -> r0, then
  // g2 (0.9) -> r1, g1 (0.5) -> r1 (1 expert < 2).
  ExpertPlacement p = Place({2, 1, 1}, {0.0, 0.5, 0.9}, 2);
  EXPECT_EQ(p.experts_of_rank, (Experts{{0, 1}, {2, 3}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{0, 1, 1}));
}

TEST(PlaceExpertGroupsTest, OneRankHoldsEverything) {
  ExpertPlacement p = Place({3, 1, 2}, {0.2, 0.5, 0.3}, 1);
  EXPECT_EQ(p.experts_of_rank, (Experts{{0, 1, 2, 3, 4, 5}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{0, 0, 0}));
}

TEST(PlaceExpertGroupsTest, FewerGroupsThanRanksStraddleInContiguousBlocks) {
  // 6 experts over 4 ranks: blocks of 2, 2, 1, 1. Group 1's first expert (3) lies in
  // rank 1's block {2, 3}, so its home rank is 1.
  ExpertPlacement p = Place({3, 3}, {}, 4);
  EXPECT_EQ(p.experts_of_rank, (Experts{{0, 1}, {2, 3}, {4}, {5}}));
  EXPECT_EQ(p.home_rank_of_group, (std::vector<int32_t>{0, 1}));
  // Loads play no part when groups straddle.
  ExpertPlacement loaded = Place({3, 3}, {0.9, 0.1}, 4);
  EXPECT_EQ(loaded.experts_of_rank, p.experts_of_rank);

  ExpertPlacement one = Place({5}, {}, 5);
  EXPECT_EQ(one.experts_of_rank, (Experts{{0}, {1}, {2}, {3}, {4}}));
  EXPECT_EQ(one.home_rank_of_group, (std::vector<int32_t>{0}));
}

TEST(PlaceExpertGroupsTest, EveryExpertExactlyOnceOverManyShapes) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int num_groups = 1 + static_cast<int>(rng() % 6);
    std::vector<int32_t> groups(num_groups);
    std::vector<double> load(num_groups);
    int total = 0;
    for (int k = 0; k < num_groups; ++k) {
      groups[k] = 1 + static_cast<int32_t>(rng() % 4);
      load[k] = static_cast<double>(rng() % 10) / 10;
      total += groups[k];
    }
    for (int ep = 1; ep <= total; ++ep) {
      SCOPED_TRACE(testing::Message() << "trial " << trial << " ep " << ep);
      absl::StatusOr<ExpertPlacement> p = PlaceExpertGroups(groups, trial % 2 ? load : std::vector<double>{}, ep);
      ASSERT_TRUE(p.ok()) << p.status();
      ExpectValidPlacement(*p, groups, ep);
      if (num_groups >= ep) {  // group-aligned: a group's experts all on its home rank
        for (int k = 0, first = 0; k < num_groups; first += groups[k], ++k) {
          const auto& held = p->experts_of_rank[p->home_rank_of_group[k]];
          for (int j = 0; j < groups[k]; ++j) {
            EXPECT_TRUE(std::binary_search(held.begin(), held.end(), first + j)) << "group " << k;
          }
        }
      }
    }
  }
}

void ExpectError(const std::vector<int32_t>& groups, const std::vector<double>& load, int ep,
                 const std::vector<std::string>& needles) {
  absl::StatusOr<ExpertPlacement> p = PlaceExpertGroups(groups, load, ep);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
  for (const std::string& needle : needles) {
    EXPECT_NE(p.status().message().find(needle), std::string::npos) << "no \"" << needle << "\" in " << p.status();
  }
}

TEST(PlaceExpertGroupsTest, BadEpIsAnErrorNamingTheFields) {
  ExpectError({2, 2}, {}, 0, {"parallel.ep = 0", "4 experts of adapter.groups"});
  ExpectError({2, 2}, {}, -1, {"parallel.ep = -1", "4 experts of adapter.groups"});
  ExpectError({2, 2}, {}, 5, {"parallel.ep = 5", "4 experts of adapter.groups"});
  ExpectError({}, {}, 1, {"parallel.ep = 1", "0 experts of adapter.groups"});
  EXPECT_TRUE(PlaceExpertGroups({2, 2}, {}, 4).ok());
}

TEST(PlaceExpertGroupsTest, BadGroupsOrLoadsAreErrors) {
  ExpectError({2, 0}, {}, 1, {"adapter.groups[1]", "0 experts"});
  ExpectError({2, 2}, {1.0}, 2, {"1 entries", "adapter.groups has 2 groups"});
  ExpectError({2, 2}, {1.0, 1.0, 1.0}, 2, {"3 entries", "adapter.groups has 2 groups"});
  ExpectError({2, 2}, {1.0, -0.5}, 2, {"adapter.groups[1]", "-0.5"});
  ExpectError({2, 2}, {std::nan(""), 1.0}, 2, {"adapter.groups[0]", "finite"});
  ExpectError({2, 2}, {1.0, std::numeric_limits<double>::infinity()}, 2, {"adapter.groups[1]", "finite"});
  EXPECT_TRUE(PlaceExpertGroups({2, 2}, {0.0, 0.0}, 2).ok());
}

// The expert-parallel index of the micro-batch holding position i.
int EpIndexOf(int64_t i, int b, int ranks, int ep) { return static_cast<int>(((i / b) % ranks) % ep); }

void ExpectPermutation(const std::vector<int64_t>& order, int64_t g) {
  ASSERT_EQ(static_cast<int64_t>(order.size()), g);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < g; ++i) ASSERT_EQ(sorted[i], i);
}

TEST(PreferenceAwareOrderTest, WorkedExampleOneRankPerMicroBatch) {
  // B = 1, 4 ranks, ep = 2: positions 0, 2, 4, 6 run on ep index 0; 1, 3, 5, 7 on 1.
  // Homes: group 0 -> 0, groups 1 and 2 -> 1; preferences -1 and 5 have no home.
  // Pairs 0, 1, 3, 5 take 1, 3, 5, 7; pair 2 takes 0, pair 7 takes 2; pair 6 (home 1,
  // full) and pair 4 (no home) wait and fill 4 and 6 in draw order.
  const std::vector<int32_t> prefs = {1, 1, 0, 2, -1, 1, 1, 0};
  std::vector<int64_t> order = PreferenceAwareOrder(prefs, 1, 4, 2, {0, 1, 1});
  EXPECT_EQ(order, (std::vector<int64_t>{2, 0, 7, 1, 4, 3, 6, 5}));
  std::vector<int32_t> no_home = prefs;
  no_home[4] = 5;  // past the groups: also no home
  EXPECT_EQ(PreferenceAwareOrder(no_home, 1, 4, 2, {0, 1, 1}), order);
}

TEST(PreferenceAwareOrderTest, WorkedExampleMicroBatchesOfTwo) {
  // B = 2, 2 ranks, ep = 2: micro-batches {0,1} and {4,5} on ep index 0, {2,3} and {6,7}
  // on 1. Group 0's home is 1, group 1's is 0; everything fits.
  const std::vector<int32_t> prefs = {0, 0, 0, 1, 1, 1, 1, 0};
  std::vector<int64_t> order = PreferenceAwareOrder(prefs, 2, 2, 2, {1, 0});
  EXPECT_EQ(order, (std::vector<int64_t>{3, 4, 0, 1, 5, 6, 2, 7}));
}

TEST(PreferenceAwareOrderTest, OneExpertRankGivesTheDrawOrder) {
  // Even the pairs with no home (-1, 7) keep their place: with ep == 1 nothing is moved.
  std::vector<int32_t> prefs = {2, 0, 1, 1, -1, 0, 2, 7, 1, 0, 0, 2};
  std::vector<int64_t> identity(prefs.size());
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(PreferenceAwareOrder(prefs, 3, 2, 1, {0, 0, 0}), identity);
  EXPECT_EQ(PreferenceAwareOrder(prefs, 2, 3, 1, {}), identity);
  EXPECT_EQ(PreferenceAwareOrder(prefs, 12, 1, 1, {0, 0, 0}), identity);
}

TEST(PreferenceAwareOrderTest, NoHomesKeepsTheDrawOrder) {
  std::vector<int32_t> prefs = {0, 1, 0, 1, 0, 1, 0, 1};
  std::vector<int64_t> identity(prefs.size());
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(PreferenceAwareOrder(prefs, 2, 2, 2, {}), identity);
}

// Random steps against the rule's consequences: a permutation; for each ep index e, the
// pairs homed on e that land on e are the first min(count, capacity) of them in draw
// order; every other pair (the waiting ones) holds the remaining positions in draw order.
TEST(PreferenceAwareOrderTest, HomesWhenCapacityAllowsAndOverflowInOrder) {
  std::mt19937 rng(11);
  const int kShapes[][3] = {{1, 4, 2}, {2, 4, 4}, {3, 2, 2}, {2, 6, 3}, {4, 8, 2}, {1, 2, 2}};
  int overflowed_steps = 0;  // steps where a homed pair found its home full
  for (int trial = 0; trial < 300; ++trial) {
    const int b = kShapes[trial % 6][0], ranks = kShapes[trial % 6][1], ep = kShapes[trial % 6][2];
    const int a = 1 + static_cast<int>(rng() % 3);
    const int64_t g = static_cast<int64_t>(b) * a * ranks;
    const int num_groups = 1 + static_cast<int>(rng() % 5);
    std::vector<int32_t> home(num_groups);
    for (int32_t& h : home) h = static_cast<int32_t>(rng() % ep);
    std::vector<int32_t> prefs(g);
    const bool skewed = trial % 3 == 0;  // most pairs on one group: overflow
    for (int32_t& p : prefs) {
      p = skewed && rng() % 4 != 0 ? 0 : static_cast<int32_t>(rng() % (num_groups + 2)) - 1;
    }
    SCOPED_TRACE(testing::Message() << "trial " << trial << " b " << b << " ranks " << ranks << " ep " << ep);
    std::vector<int64_t> order = PreferenceAwareOrder(prefs, b, ranks, ep, home);
    ExpectPermutation(order, g);
    std::vector<int64_t> position_of(g);
    for (int64_t i = 0; i < g; ++i) position_of[order[i]] = i;

    std::vector<std::vector<int64_t>> positions_of(ep);
    for (int64_t i = 0; i < g; ++i) positions_of[EpIndexOf(i, b, ranks, ep)].push_back(i);
    std::vector<size_t> placed(ep, 0);
    std::vector<int64_t> waiting;
    int64_t unhomed = 0;
    for (int64_t pair = 0; pair < g; ++pair) {
      const int32_t p = prefs[pair];
      const int h = p >= 0 && p < num_groups ? home[p] : -1;
      if (h < 0) ++unhomed;
      if (h >= 0 && placed[h] < positions_of[h].size()) {
        // Its home's next lowest position.
        EXPECT_EQ(position_of[pair], positions_of[h][placed[h]]) << "pair " << pair << " not on its home";
        ++placed[h];
      } else {
        waiting.push_back(pair);
      }
    }
    for (size_t w = 1; w < waiting.size(); ++w) {
      EXPECT_LT(position_of[waiting[w - 1]], position_of[waiting[w]]) << "waiting pairs out of draw order";
    }
    if (static_cast<int64_t>(waiting.size()) > unhomed) ++overflowed_steps;
  }
  EXPECT_GT(overflowed_steps, 20);  // the overflow path was exercised
}

TEST(PreferenceAwareOrderDeathTest, BrokenInvariantsAbort) {
  EXPECT_DEATH(PreferenceAwareOrder({0, 0, 0}, 2, 1, 1, {0}), "internal check failed");  // G % (B*ranks)
  EXPECT_DEATH(PreferenceAwareOrder({0, 0, 0, 0, 0, 0}, 1, 3, 2, {0}), "internal check failed");  // ranks % ep
  EXPECT_DEATH(PreferenceAwareOrder({0, 0}, 1, 2, 2, {2}), "internal check failed");  // home >= ep
}

}  // namespace
}  // namespace pmol::dist
