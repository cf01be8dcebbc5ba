// Per-local-rank GPU choice; see local_device.h.
#include "dist/local_device.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace pmol::dist {

absl::StatusOr<std::string> LocalRankVisibleDevices(const char* visible, int local_rank, int local_size) {
  if (visible == nullptr || absl::StripAsciiWhitespace(visible).empty()) return std::to_string(local_rank);
  std::vector<std::string> devices;
  for (absl::string_view d : absl::StrSplit(visible, ',')) {
    d = absl::StripAsciiWhitespace(d);
    if (d.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA_VISIBLE_DEVICES = \"", visible, "\" has an empty entry"));
    }
    devices.emplace_back(d);
  }
  if (devices.size() == 1) return devices[0];
  if (static_cast<int>(devices.size()) < local_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CUDA_VISIBLE_DEVICES = \"", visible, "\" lists ", devices.size(), " GPUs, but ", local_size,
        " ranks run on this node and each needs its own; start at most ", devices.size(),
        " ranks per node (e.g. srun --gpus-per-task=1, mpirun --npernode ", devices.size(), ")"));
  }
  return devices[local_rank];
}

}  // namespace pmol::dist
