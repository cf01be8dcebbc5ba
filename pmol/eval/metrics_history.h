// A run's metrics log (metrics.jsonl, read by pmol/train/metrics_log.h's
// ReadMetricsJsonl) as curves for reports: the series of one metric of one split by step
// (a resumed run logs the steps after its checkpoint again: the later record wins), the
// last record of a split, and the wall-clock seconds the training steps span.
#ifndef PMOL_EVAL_METRICS_HISTORY_H_
#define PMOL_EVAL_METRICS_HISTORY_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/train/metrics_log.h"

namespace pmol {

struct MetricsHistory {
  std::vector<MetricsRecord> records;  // in file order

  // (step, value) of `metric` in `split`, ascending by step.
  std::vector<std::pair<int64_t, double>> Series(const std::string& split,
                                                 const std::string& metric) const;
  // The last record of `split`, or null.
  const MetricsRecord* Last(const std::string& split) const;
  // Wall time from the first to the last "train" record (NaN with fewer than two).
  double TrainSeconds() const;
};

absl::StatusOr<MetricsHistory> ReadMetricsHistory(const std::string& path);

}  // namespace pmol

#endif  // PMOL_EVAL_METRICS_HISTORY_H_
