// The comparison report of `pmol report`: for each run (a name and its output dir) it
// reads DIR/metrics.jsonl (metrics_history.h) and DIR/eval.json (pmol/train/evaluator.h) and
// renders
//   * a terminal table: one row per run with the eval pairs, the objective's loss (DPO,
//     SFT or reward, without the router terms), the training steps and wall time, and
//     per preference plus overall the reward accuracy and mean margin;
//   * for each PMoL run, a router table: on each preference's eval data, the mass the
//     routers give each expert group (and the empty experts) over response tokens, per
//     adapted layer (mean over its modules) and over all layers (the paper's Figure 5);
//   * one self-contained HTML page (inline SVG, no scripts, no external resources):
//     training loss and reward accuracy against step (train as a trailing moving average
//     over about 1/25 of the logged points, eval points as markers), the table, and a
//     router heat map per PMoL run.
#ifndef PMOL_EVAL_REPORT_H_
#define PMOL_EVAL_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/eval/metrics_history.h"
#include "pmol/train/evaluator.h"

namespace pmol {

struct RunSpec {
  std::string name, dir;
};

// "NAME=DIR" (split at the first '='; both parts non-empty).
absl::StatusOr<RunSpec> ParseRunSpec(const std::string& text);

struct ReportRun {
  std::string name, dir;
  MetricsHistory log;
  EvalResult eval;
};

// Errors name the run and the file (missing, unreadable, or a bad line / field).
absl::StatusOr<ReportRun> LoadRun(const RunSpec& spec);

std::string EvalTable(const std::vector<ReportRun>& runs);
// Empty when no run has expert groups.
std::string RouterTables(const std::vector<ReportRun>& runs);
std::string HtmlReport(const std::vector<ReportRun>& runs);

}  // namespace pmol

#endif  // PMOL_EVAL_REPORT_H_
