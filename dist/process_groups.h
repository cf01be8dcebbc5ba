// The process groups of a run, from the world and `parallel { dp: ep: }`:
//   world = dp x ep ranks, rank = d * ep + e  (d in [0, dp), e in [0, ep))
//   data-parallel         all ranks: every rank reads its own micro-batches, and
//                         replicated trainable tensors are reduced over the world
//   expert-parallel       the ep ranks with the same d: together they hold every expert
//                         group once
//   expert-data-parallel  the dp ranks with the same e: they hold the same experts, whose
//                         gradients are reduced over this group only
// Consecutive ranks share an expert-parallel group, so with ranks packed per node the
// all-to-all traffic of expert parallelism stays inside a node.
#ifndef DIST_PROCESS_GROUPS_H_
#define DIST_PROCESS_GROUPS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "dist/comm.h"
#include "proto/run_config.pb.h"

namespace pmol::dist {

struct ProcessGroups {
  Comm* world = nullptr;  // not owned
  int dp = 1, ep = 1;
  int dp_index = 0, ep_index = 0;  // d and e of this rank
  // Every rank, as its own communicator: the gradients of replicated (non-expert)
  // tensors, so that their traffic is counted apart from the world's control messages.
  std::unique_ptr<Comm> data_parallel;
  std::unique_ptr<Comm> expert_parallel;
  std::unique_ptr<Comm> expert_data_parallel;
};

// Checks that dp x ep equals the world size (dp = 0: world / ep, which must divide) and
// builds the groups (a collective over `world`). Errors name the fields.
absl::StatusOr<ProcessGroups> MakeProcessGroups(Comm* world, const config::ParallelConfig& parallel);

}  // namespace pmol::dist

#endif  // DIST_PROCESS_GROUPS_H_
