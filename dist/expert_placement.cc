// Expert placement and the preference-aware order; see expert_placement.h.
#include "dist/expert_placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace pmol::dist {

absl::StatusOr<ExpertPlacement> PlaceExpertGroups(const std::vector<int32_t>& experts_per_group,
                                                  const std::vector<double>& group_load, int ep) {
  const int num_groups = static_cast<int>(experts_per_group.size());
  int64_t total = 0;
  for (int k = 0; k < num_groups; ++k) {
    if (experts_per_group[k] < 1) {
      return absl::InvalidArgumentError(absl::StrCat("adapter.groups[", k, "] has ", experts_per_group[k],
                                                     " experts; every group needs at least one"));
    }
    total += experts_per_group[k];
  }
  if (ep < 1 || ep > total) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.ep = ", ep, " must be between 1 and the ", total, " experts of adapter.groups (",
        num_groups, " groups): every expert-parallel rank must hold at least one expert"));
  }
  if (!group_load.empty()) {
    if (static_cast<int>(group_load.size()) != num_groups) {
      return absl::InvalidArgumentError(absl::StrCat("the group load has ", group_load.size(),
                                                     " entries, but adapter.groups has ", num_groups,
                                                     " groups (parallel.ep = ", ep, ")"));
    }
    for (int k = 0; k < num_groups; ++k) {
      if (!std::isfinite(group_load[k]) || group_load[k] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("the load of adapter.groups[", k, "] is ", group_load[k],
                                                       "; it must be finite and >= 0 (parallel.ep = ", ep, ")"));
      }
    }
  }

  // first[k]: global index of group k's first expert.
  std::vector<int32_t> first(num_groups, 0);
  for (int k = 1; k < num_groups; ++k) first[k] = first[k - 1] + experts_per_group[k - 1];

  ExpertPlacement placement;
  placement.ep = ep;
  placement.experts_of_rank.assign(ep, {});
  placement.home_rank_of_group.assign(num_groups, 0);

  if (num_groups >= ep) {
    std::vector<double> load(num_groups, 1.0 / num_groups);
    if (!group_load.empty()) load = group_load;
    std::vector<int> groups(num_groups);
    std::iota(groups.begin(), groups.end(), 0);
    std::sort(groups.begin(), groups.end(), [&](int a, int b) {
      if (experts_per_group[a] != experts_per_group[b]) return experts_per_group[a] > experts_per_group[b];
      if (load[a] != load[b]) return load[a] > load[b];
      return a < b;
    });
    std::vector<int64_t> rank_experts(ep, 0);
    std::vector<double> rank_load(ep, 0.0);
    for (int k : groups) {
      int best = 0;
      for (int e = 1; e < ep; ++e) {
        if (rank_experts[e] < rank_experts[best] ||
            (rank_experts[e] == rank_experts[best] && rank_load[e] < rank_load[best])) {
          best = e;  // ties keep the lower index
        }
      }
      rank_experts[best] += experts_per_group[k];
      rank_load[best] += load[k];
      placement.home_rank_of_group[k] = best;
      for (int32_t j = 0; j < experts_per_group[k]; ++j) placement.experts_of_rank[best].push_back(first[k] + j);
    }
    for (auto& experts : placement.experts_of_rank) std::sort(experts.begin(), experts.end());
  } else {
    // Contiguous blocks: rank e starts at e * base + min(e, extra).
    const int64_t base = total / ep, extra = total % ep;
    std::vector<int32_t> rank_of_expert(total);
    for (int e = 0, x = 0; e < ep; ++e) {
      const int64_t size = base + (e < extra ? 1 : 0);
      for (int64_t i = 0; i < size; ++i, ++x) {
        placement.experts_of_rank[e].push_back(x);
        rank_of_expert[x] = e;
      }
    }
    for (int k = 0; k < num_groups; ++k) placement.home_rank_of_group[k] = rank_of_expert[first[k]];
  }
  return placement;
}

std::vector<int64_t> PreferenceAwareOrder(const std::vector<int32_t>& preference_of_pair,
                                          int32_t micro_batch_size, int ranks, int ep,
                                          const std::vector<int32_t>& home_rank_of_group) {
  const int64_t g = static_cast<int64_t>(preference_of_pair.size());
  const int64_t b = micro_batch_size;
  PMOL_CHECK(b >= 1 && ranks >= 1 && ep >= 1);
  PMOL_CHECK(g % (b * ranks) == 0);
  PMOL_CHECK(ranks % ep == 0);
  for (int32_t home : home_rank_of_group) PMOL_CHECK(home >= 0 && home < ep);
  std::vector<int64_t> order(g);
  if (ep == 1) {  // every micro-batch runs on expert-parallel index 0: keep the draw order
    std::iota(order.begin(), order.end(), 0);
    return order;
  }

  // positions_of[e]: the positions whose micro-batch runs on expert-parallel index e,
  // ascending; next[e] indexes the lowest one not yet taken (taken in ascending order).
  std::vector<std::vector<int64_t>> positions_of(ep);
  for (int64_t i = 0; i < g; ++i) positions_of[((i / b) % ranks) % ep].push_back(i);
  std::vector<size_t> next(ep, 0);

  constexpr int64_t kFree = -1;
  std::fill(order.begin(), order.end(), kFree);
  std::vector<int64_t> waiting;
  for (int64_t pair = 0; pair < g; ++pair) {
    const int32_t p = preference_of_pair[pair];
    if (p >= 0 && p < static_cast<int32_t>(home_rank_of_group.size())) {
      const int32_t home = home_rank_of_group[p];
      if (next[home] < positions_of[home].size()) {
        order[positions_of[home][next[home]++]] = pair;
        continue;
      }
    }
    waiting.push_back(pair);
  }
  size_t w = 0;
  for (int64_t i = 0; i < g; ++i) {
    if (order[i] == kFree) order[i] = waiting[w++];
  }
  PMOL_CHECK(w == waiting.size());
  return order;
}

}  // namespace pmol::dist
