// Expert placement for expert parallelism, and the preference-aware order of a step's
// pairs. Pure functions (no Comm): every rank computes the same answer.
//
// PlaceExpertGroups: which experts each of the ep expert-parallel ranks holds. Experts are
// numbered group-major (ExpertLayout order: group 0's experts first, then group 1's, ...).
//   ep == 1               every expert on rank 0
//   num_groups >= ep      group-aligned, longest-processing-time greedy: groups in order of
//                         (expert count desc, load desc, index asc), each to the rank with
//                         (fewest experts so far, then least load so far, then lowest index).
//                         Empty group_load means uniform load (1 / num_groups per group).
//   num_groups < ep       a group must straddle ranks: the group-major list of all experts
//                         is cut into ep contiguous blocks, the first total % ep blocks one
//                         longer (sizes total / ep + 1, then total / ep); rank e gets block e.
// A group's home rank is the rank holding its first expert.
//
// PreferenceAwareOrder: a step's G = micro_batch_size * A * ranks pairs fill micro-batches
// m = 0..G/B-1 of B pairs each; micro-batch m runs on world rank m % ranks, whose
// expert-parallel index is (m % ranks) % ep (dist/process_groups.h: rank = d * ep + e).
// In draw order, a pair whose preference p has a home (0 <= p < home_rank_of_group.size())
// takes the lowest free position among the micro-batches whose expert-parallel index is
// home_rank_of_group[p]; if none is free, or p has no home, it waits. The waiting pairs,
// in draw order, then fill the remaining free positions in ascending order. ep == 1: the
// draw order itself (every micro-batch is on index 0; pairs with no home are not moved).
#ifndef DIST_EXPERT_PLACEMENT_H_
#define DIST_EXPERT_PLACEMENT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace pmol::dist {

struct ExpertPlacement {
  int ep = 1;
  // experts_of_rank[e]: global expert indices (group-major ExpertLayout order: group 0's
  // experts first, then group 1's...), ascending, held by expert-parallel rank e.
  std::vector<std::vector<int32_t>> experts_of_rank;
  // home_rank_of_group[k]: the expert-parallel rank holding group k's first expert.
  std::vector<int32_t> home_rank_of_group;
};

// experts_per_group[k] >= 1; group_load[k] >= 0 (the measured load of group k, e.g. its
// share of the training pairs), or empty for uniform load; ep >= 1. Errors
// (InvalidArgument) name parallel.ep and adapter.groups: ep outside [1, total experts]
// (a rank would hold no expert), a group with no expert, or group_load of the wrong size
// or with a negative or non-finite entry.
absl::StatusOr<ExpertPlacement> PlaceExpertGroups(const std::vector<int32_t>& experts_per_group,
                                                  const std::vector<double>& group_load, int ep);

// The preference-aware scheduler (rule above). preference_of_pair holds the G pairs'
// preferences in draw order. Returns order, a permutation of [0, G): position i
// (micro-batch i / B) receives pair order[i]. Deterministic. Aborts (internal invariants)
// unless B >= 1, ranks >= 1, ep >= 1, G is a multiple of B * ranks, ranks % ep == 0 and
// every home rank lies in [0, ep).
std::vector<int64_t> PreferenceAwareOrder(const std::vector<int32_t>& preference_of_pair,
                                          int32_t micro_batch_size, int ranks, int ep,
                                          const std::vector<int32_t>& home_rank_of_group);

}  // namespace pmol::dist

#endif  // DIST_EXPERT_PLACEMENT_H_
