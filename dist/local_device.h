// Which GPU a rank uses when several ranks share a node: each local rank r of L binds its
// own device by narrowing CUDA_VISIBLE_DEVICES to one entry before the CUDA runtime
// starts (so that device 0 of the process is its GPU, and NCCL/CUDA see one device):
//   unset or empty           -> "r"           (the node's r-th GPU)
//   one entry                -> kept           (the launcher bound the rank already, e.g.
//                                               Slurm's --gpus-per-task=1)
//   k >= L entries           -> the r-th entry
//   1 < k < L entries        -> an error: fewer GPUs than ranks on the node
#ifndef DIST_LOCAL_DEVICE_H_
#define DIST_LOCAL_DEVICE_H_

#include <string>

#include "absl/status/statusor.h"

namespace pmol::dist {

// The CUDA_VISIBLE_DEVICES value for local rank `local_rank` of `local_size`, given the
// current value (`visible`, null when unset).
absl::StatusOr<std::string> LocalRankVisibleDevices(const char* visible, int local_rank, int local_size);

}  // namespace pmol::dist

#endif  // DIST_LOCAL_DEVICE_H_
