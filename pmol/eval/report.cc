// Run comparison tables and the HTML report; see report.h.
#include "pmol/eval/report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pmol/eval/svg_chart.h"

namespace pmol {
namespace {

// Rows of cells, the header row first; `spans` optionally labels runs of header columns
// (label, column count) on a line above it, e.g. a preference over its "acc" and
// "margin" columns ("" for columns without a label).
struct Table {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::pair<std::string, size_t>> spans;
};

std::string Fixed(double v, int digits = 4) {
  return std::isfinite(v) ? absl::StrFormat("%.*f", digits, v) : "-";
}

constexpr size_t kGap = 2;  // spaces between text columns

// Columns padded to their widest cell (a span label widens its last column when it is
// longer than the columns below it): the first column left-aligned, the rest right.
std::string TextTable(const Table& t) {
  std::vector<size_t> width;
  for (const auto& row : t.rows)
    for (size_t c = 0; c < row.size(); ++c) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], row[c].size());
    }
  size_t first = 0;
  for (const auto& [label, count] : t.spans) {
    if (count > 0 && first + count <= width.size()) {
      size_t span = kGap * (count - 1);
      for (size_t c = first; c < first + count; ++c) span += width[c];
      if (label.size() > span) width[first + count - 1] += label.size() - span;
    }
    first += count;
  }
  auto finish = [](std::string line) {
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line + "\n";
  };
  std::string out;
  if (!t.spans.empty()) {
    std::string line;
    size_t c = 0;
    for (const auto& [label, count] : t.spans) {
      size_t span = kGap * (count - 1);
      for (size_t i = c; i < c + count && i < width.size(); ++i) span += width[i];
      absl::StrAppend(&line, c == 0 ? "" : std::string(kGap, ' '),
                      std::string(span - std::min(span, label.size()), ' '), label);
      c += count;
    }
    out += finish(line);
  }
  for (size_t r = 0; r < t.rows.size(); ++r) {
    std::string line;
    for (size_t c = 0; c < t.rows[r].size(); ++c) {
      const std::string& cell = t.rows[r][c];
      const std::string pad(width[c] - cell.size(), ' ');
      absl::StrAppend(&line, c == 0 ? "" : std::string(kGap, ' '),
                      c == 0 ? cell + pad : pad + cell);
    }
    out += finish(line);
    if (r == 0) {
      size_t total = kGap * (width.size() - 1);
      for (size_t w : width) total += w;
      absl::StrAppend(&out, std::string(total, '-'), "\n");
    }
  }
  return out;
}

std::string HtmlTable(const Table& t) {
  std::string out = "<table>\n";
  if (!t.spans.empty()) {
    absl::StrAppend(&out, "<tr>");
    for (const auto& [label, count] : t.spans)
      absl::StrAppend(&out, "<th colspan=\"", count, "\">", XmlEscape(label), "</th>");
    absl::StrAppend(&out, "</tr>\n");
  }
  for (size_t r = 0; r < t.rows.size(); ++r) {
    absl::StrAppend(&out, "<tr>");
    for (const std::string& cell : t.rows[r])
      absl::StrAppend(&out, r == 0 ? "<th>" : "<td>", XmlEscape(cell), r == 0 ? "</th>" : "</td>");
    absl::StrAppend(&out, "</tr>\n");
  }
  absl::StrAppend(&out, "</table>\n");
  return out;
}

// Preference names of all runs, in order of first appearance.
std::vector<std::string> AllPreferences(const std::vector<ReportRun>& runs) {
  std::vector<std::string> names;
  for (const ReportRun& run : runs)
    for (const std::string& n : run.eval.preference_names)
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  return names;
}

const EvalSplit* FindSplit(const EvalResult& e, const std::string& name) {
  for (size_t p = 0; p < e.preference_names.size() && p < e.preferences.size(); ++p)
    if (e.preference_names[p] == name) return &e.preferences[p];
  return nullptr;
}

Table ComparisonTable(const std::vector<ReportRun>& runs) {
  const std::vector<std::string> prefs = AllPreferences(runs);
  Table t;
  t.rows.push_back({"run", "pairs", "main loss", "steps", "time (s)"});
  t.spans.push_back({"", t.rows[0].size()});
  for (const std::string& p : prefs) t.spans.push_back({p, 2});
  t.spans.push_back({"overall", 2});
  for (size_t i = 0; i <= prefs.size(); ++i) {
    t.rows[0].push_back("acc");
    t.rows[0].push_back("margin");
  }
  for (const ReportRun& run : runs) {
    const MetricsRecord* last = run.log.Last("train");
    std::vector<std::string> row = {run.name, absl::StrCat(run.eval.pairs), Fixed(run.eval.main),
                                    last ? absl::StrCat(last->step) : "-",
                                    last ? Fixed(run.log.TrainSeconds(), 1) : "-"};
    for (const std::string& p : prefs) {
      const EvalSplit* s = FindSplit(run.eval, p);
      row.push_back(s != nullptr ? Fixed(s->accuracy) : "-");
      row.push_back(s != nullptr ? Fixed(s->margin) : "-");
    }
    row.push_back(Fixed(run.eval.overall.accuracy));
    row.push_back(Fixed(run.eval.overall.margin));
    t.rows.push_back(std::move(row));
  }
  return t;
}

bool HasRouter(const ReportRun& run) { return !run.eval.group_names.empty(); }

// Rows: each preference's data x (each router layer, then "all"); then all data, "all".
Table RouterTable(const EvalResult& e) {
  Table t;
  t.rows.push_back({"data", "layer"});
  for (const std::string& g : e.group_names) t.rows[0].push_back(g);
  t.rows[0].push_back("empty");
  auto add = [&](const std::string& data, const std::string& layer, const std::vector<double>& v) {
    std::vector<std::string> row = {data, layer};
    for (double x : v) row.push_back(Fixed(x, 3));
    t.rows.push_back(std::move(row));
  };
  for (size_t p = 0; p < e.preferences.size(); ++p) {
    const EvalSplit& s = e.preferences[p];
    if (s.pairs == 0) continue;
    for (size_t j = 0; j < e.router_layers.size() && j < s.router_mass_by_layer.size(); ++j)
      add(e.preference_names[p], absl::StrCat(e.router_layers[j]), s.router_mass_by_layer[j]);
    add(e.preference_names[p], "all", s.router_mass);
  }
  add("all data", "all", e.overall.router_mass);
  return t;
}

// Trailing moving average over about 1/25 of the points.
std::vector<std::pair<double, double>> Smoothed(const std::vector<std::pair<int64_t, double>>& s) {
  const size_t window = std::max<size_t>(1, s.size() / 25);
  std::vector<std::pair<double, double>> out;
  double sum = 0;
  size_t finite = 0;
  std::vector<double> recent;
  for (size_t i = 0; i < s.size(); ++i) {
    const double v = s[i].second;
    recent.push_back(v);
    if (std::isfinite(v)) sum += v, ++finite;
    if (recent.size() > window) {
      const double old = recent[recent.size() - window - 1];
      if (std::isfinite(old)) sum -= old, --finite;
    }
    out.push_back({static_cast<double>(s[i].first), finite > 0 ? sum / finite : NAN});
  }
  return out;
}

std::vector<std::pair<double, double>> AsDoubles(const std::vector<std::pair<int64_t, double>>& s) {
  std::vector<std::pair<double, double>> out;
  for (const auto& [x, y] : s) out.push_back({static_cast<double>(x), y});
  return out;
}

// The objective's loss in the metrics log: loss/dpo, loss/sft or loss/reward.
std::string MainLossName(const std::vector<ReportRun>& runs) {
  for (const char* name : {"loss/dpo", "loss/sft", "loss/reward"}) {
    for (const ReportRun& run : runs) {
      if (!run.log.Series("train", name).empty()) return name;
    }
  }
  return "loss/total";
}

std::string CurveChart(const std::vector<ReportRun>& runs, const std::string& metric,
                       const std::string& title, const std::string& y_label) {
  std::vector<ChartSeries> series;
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string color = PaletteColor(i);
    series.push_back(
        {runs[i].name + " train", color, Smoothed(runs[i].log.Series("train", metric)), false});
    const auto eval = runs[i].log.Series("eval", metric);
    if (!eval.empty()) series.push_back({runs[i].name + " eval", color, AsDoubles(eval), true});
  }
  LineChartOptions o;
  o.title = title;
  o.x_label = "step";
  o.y_label = y_label;
  return SvgLineChart(o, series);
}

constexpr char kStyle[] = R"(body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.note{color:#666;font-size:12px}svg{display:block;margin:8px 0})";

}  // namespace

absl::StatusOr<RunSpec> ParseRunSpec(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
    return absl::InvalidArgumentError(
        absl::StrCat("--run=", text, ": expected NAME=DIR (a run name and its output folder)"));
  return RunSpec{text.substr(0, eq), text.substr(eq + 1)};
}

absl::StatusOr<ReportRun> LoadRun(const RunSpec& spec) {
  ReportRun run;
  run.name = spec.name;
  run.dir = spec.dir;
  auto in_run = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat("run ", spec.name, ": ", s.message()));
  };
  absl::StatusOr<MetricsHistory> log = ReadMetricsHistory(spec.dir + "/metrics.jsonl");
  if (!log.ok()) return in_run(log.status());
  run.log = std::move(*log);
  absl::StatusOr<EvalResult> eval = ReadEvalResult(spec.dir + "/eval.json");
  if (!eval.ok()) return in_run(eval.status());
  run.eval = std::move(*eval);
  return run;
}

std::string EvalTable(const std::vector<ReportRun>& runs) {
  return absl::StrCat(
      "Evaluation (eval.json): reward accuracy and mean reward margin per preference\n",
      TextTable(ComparisonTable(runs)));
}

std::string RouterTables(const std::vector<ReportRun>& runs) {
  std::string out;
  for (const ReportRun& run : runs) {
    if (!HasRouter(run)) continue;
    absl::StrAppend(&out, "\nRouter mass per expert group, run ", run.name,
                    " (each preference's eval data, response tokens; per layer: mean over its "
                    "adapted modules)\n",
                    TextTable(RouterTable(run.eval)));
  }
  return out;
}

std::string HtmlReport(const std::vector<ReportRun>& runs) {
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>pmol report</title>\n<style>",
      kStyle, "</style>\n</head>\n<body>\n<h1>pmol report</h1>\n<p class=\"note\">Runs: ");
  for (size_t i = 0; i < runs.size(); ++i) {
    absl::StrAppend(&html, i ? "; " : "", "<b>", XmlEscape(runs[i].name), "</b> (",
                    XmlEscape(runs[i].dir), ")");
  }
  absl::StrAppend(&html, "</p>\n<h2>Evaluation</h2>\n",
                  "<p class=\"note\">Reward accuracy and mean reward margin on the eval set, per "
                  "preference and overall; main loss: the objective's loss without the router "
                  "terms.</p>\n",
                  HtmlTable(ComparisonTable(runs)));
  absl::StrAppend(
      &html, "<h2>Training curves</h2>\n",
      "<p class=\"note\">Lines: training metrics, trailing moving average over about "
      "1/25 of the logged steps; dots: evaluations.</p>\n",
      // The objective's own loss is comparable across methods; loss/total adds PMoL's
      // router terms.
      CurveChart(runs, "loss/total", "Loss with the router terms (loss/total)", "loss"),
      MainLossName(runs) == "loss/total"
          ? std::string()
          : CurveChart(runs, MainLossName(runs),
                       absl::StrCat("Objective loss (", MainLossName(runs), ")"), "loss"),
      CurveChart(runs, "rewards/accuracy", "Reward accuracy (rewards/accuracy)", "accuracy"));
  bool any_router = false;
  for (const ReportRun& run : runs) {
    if (!HasRouter(run)) continue;
    if (!any_router) {
      absl::StrAppend(&html, "<h2>Router mass per expert group</h2>\n",
                      "<p class=\"note\">Rows: the eval data of one preference at one adapted "
                      "layer (mean over its modules; \"all\": every module); columns: expert "
                      "groups and the empty experts. Mass over response tokens.</p>\n");
      any_router = true;
    }
    const Table t = RouterTable(run.eval);
    std::vector<std::string> rows, columns(t.rows[0].begin() + 2, t.rows[0].end());
    std::vector<std::vector<double>> values;
    auto push = [&](const std::string& label, const std::vector<double>& v) {
      rows.push_back(label);
      values.push_back(v);
    };
    const EvalResult& e = run.eval;
    for (size_t p = 0; p < e.preferences.size(); ++p) {
      const EvalSplit& s = e.preferences[p];
      if (s.pairs == 0) continue;
      for (size_t j = 0; j < e.router_layers.size() && j < s.router_mass_by_layer.size(); ++j)
        push(absl::StrCat(e.preference_names[p], " / layer ", e.router_layers[j]),
             s.router_mass_by_layer[j]);
      push(absl::StrCat(e.preference_names[p], " / all"), s.router_mass);
    }
    push("all data / all", e.overall.router_mass);
    absl::StrAppend(&html, SvgHeatMap("Run " + run.name, rows, columns, values));
  }
  absl::StrAppend(&html, "</body>\n</html>\n");
  return html;
}

}  // namespace pmol
