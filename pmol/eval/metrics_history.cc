// Metric curves from a metrics log; see metrics_history.h.
#include "pmol/eval/metrics_history.h"

#include <cmath>
#include <limits>
#include <map>

#include "pmol/core/status.h"

namespace pmol {

std::vector<std::pair<int64_t, double>> MetricsHistory::Series(const std::string& split,
                                                               const std::string& metric) const {
  std::map<int64_t, double> by_step;
  for (const MetricsRecord& r : records) {
    if (r.split != split) continue;
    auto it = r.scalars.find(metric);
    if (it != r.scalars.end()) by_step[r.step] = it->second;
  }
  return {by_step.begin(), by_step.end()};
}

const MetricsRecord* MetricsHistory::Last(const std::string& split) const {
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    if (it->split == split) return &*it;
  }
  return nullptr;
}

double MetricsHistory::TrainSeconds() const {
  const MetricsRecord* first = nullptr;
  for (const MetricsRecord& r : records) {
    if (r.split == "train" && std::isfinite(r.wall_time)) {
      first = &r;
      break;
    }
  }
  const MetricsRecord* last = Last("train");
  if (first == nullptr || last == nullptr || first == last || !std::isfinite(last->wall_time)) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return last->wall_time - first->wall_time;
}

absl::StatusOr<MetricsHistory> ReadMetricsHistory(const std::string& path) {
  MetricsHistory history;
  PMOL_ASSIGN_OR_RETURN(history.records, ReadMetricsJsonl(path));
  return history;
}

}  // namespace pmol
