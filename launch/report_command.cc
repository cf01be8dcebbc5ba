// `pmol report --run=NAME=DIR [--run=NAME=DIR ...] [--out=report.html]`: compares runs.
// Each DIR is a run's output folder holding metrics.jsonl and eval.json (written by
// `pmol train`). Prints the evaluation table (reward accuracy and margin per preference)
// and, for PMoL runs, the router mass per expert group and layer on each preference's
// eval data; with --out, also writes one self-contained HTML page (atomically).
// --run may be given several times (gflags keeps only the last value of a flag, so the
// command reads every occurrence from the command line itself).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/common_flags.h"
#include "pmol/core/status.h"
#include "pmol/eval/report.h"
#include "pmol/io/atomic_file.h"

DEFINE_string(run, "", "report: NAME=DIR, a run's name and output folder (repeat for more runs)");

namespace pmol {
namespace {

// Every --run value on the command line, in order ("--run=V", "-run=V", "--run V").
std::vector<std::string> RunFlagValues() {
  std::vector<std::string> values;
  const std::vector<std::string>& args = gflags::GetArgvs();
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    for (const char* prefix : {"--run=", "-run="}) {
      if (a.rfind(prefix, 0) == 0) values.push_back(a.substr(std::string(prefix).size()));
    }
    if ((a == "--run" || a == "-run") && i + 1 < args.size()) values.push_back(args[++i]);
  }
  if (values.empty() && !FLAGS_run.empty()) values.push_back(FLAGS_run);
  return values;
}

absl::Status RunReport() {
  const std::vector<std::string> flags = RunFlagValues();
  if (flags.empty())
    return absl::InvalidArgumentError("--run=NAME=DIR is required (once per run to compare)");
  std::vector<ReportRun> runs;
  for (const std::string& flag : flags) {
    PMOL_ASSIGN_OR_RETURN(RunSpec spec, ParseRunSpec(flag));
    for (const ReportRun& seen : runs)
      if (seen.name == spec.name)
        return absl::InvalidArgumentError(
            absl::StrCat("--run=", flag, ": the name ", spec.name, " is used twice"));
    PMOL_ASSIGN_OR_RETURN(ReportRun run, LoadRun(spec));
    runs.push_back(std::move(run));
  }
  std::string text = EvalTable(runs) + RouterTables(runs);
  std::fputs(text.c_str(), stdout);
  if (!FLAGS_out.empty()) {
    const std::string html = HtmlReport(runs);
    PMOL_RETURN_IF_ERROR(WriteFileAtomically(FLAGS_out, {html}));
    std::printf("\nwrote %s\n", FLAGS_out.c_str());
  }
  return absl::OkStatus();
}

}  // namespace

extern const Command kReportCommand = {
    "report", "compare runs: eval accuracy/margin tables, router mass per layer, HTML report",
    &RunReport};

}  // namespace pmol
