// Reading a run's metrics log, metrics.jsonl: one JSON object per line,
//   {"step": N, "split": "train"|"eval", "wall_time": t, "<metric>": value, ...}
// with metric names as StepMetrics::Named gives them ("loss/total", "rewards/accuracy/
// <pref>", ...). Numbers are kept, null reads as NaN, other non-numeric fields are
// ignored. Blank lines are skipped. A last line without its newline that does not parse
// is a torn write (the run was stopped mid-line): it is dropped and counted; any other
// bad line is an error naming the file and line.
#ifndef PMOL_EVAL_METRICS_LOG_H_
#define PMOL_EVAL_METRICS_LOG_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pmol {

struct MetricsRecord {
  int64_t step = 0;
  std::string split;
  double wall_time = 0;  // NaN when absent
  std::map<std::string, double> values;
};

struct MetricsLog {
  std::vector<MetricsRecord> records;  // in file order
  int64_t torn_lines = 0;              // 0 or 1

  // (step, value) of `metric` in `split`, ascending by step; when a step was logged
  // twice (a resumed run repeats the steps after its checkpoint) the later record wins.
  std::vector<std::pair<int64_t, double>> Series(const std::string& split,
                                                 const std::string& metric) const;
  // The last record of `split`, or null.
  const MetricsRecord* Last(const std::string& split) const;
};

// `where` names the source in errors (e.g. the path).
absl::StatusOr<MetricsLog> ParseMetricsLog(const std::string& text, const std::string& where);
absl::StatusOr<MetricsLog> ReadMetricsLog(const std::string& path);

}  // namespace pmol

#endif  // PMOL_EVAL_METRICS_LOG_H_
