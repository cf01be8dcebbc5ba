// Process groups; see process_groups.h.
#include "dist/process_groups.h"

#include "absl/strings/str_cat.h"

namespace pmol::dist {

absl::StatusOr<ProcessGroups> MakeProcessGroups(Comm* world, const config::ParallelConfig& parallel) {
  const int n = world->size();
  const int ep = parallel.ep();
  if (ep < 1 || n % ep != 0) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.ep = ", ep, " must divide the world size ", n,
                                                   " (the number of ranks the launcher started)"));
  }
  const int dp = parallel.dp() == 0 ? n / ep : parallel.dp();
  if (dp * ep != n) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.dp x parallel.ep = ", dp, " x ", ep, " = ", dp * ep,
                                                   ", but the launcher started ", n,
                                                   " ranks; set parallel.dp: 0 to use every rank"));
  }
  ProcessGroups g;
  g.world = world;
  g.dp = dp;
  g.ep = ep;
  g.dp_index = world->rank() / ep;
  g.ep_index = world->rank() % ep;
  g.data_parallel = world->Split(0, world->rank(), "data-parallel");
  g.expert_parallel = world->Split(g.dp_index, g.ep_index, "expert-parallel");
  g.expert_data_parallel = world->Split(g.ep_index, g.dp_index, "expert-data-parallel");
  return g;
}

}  // namespace pmol::dist
