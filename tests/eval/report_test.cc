// The run comparison report on two small run folders: a PMoL and a LoRA run of a tiny
// f64 model, whose eval.json comes from a real EvaluateDataset and whose metrics.jsonl
// is written here (with a torn last line). Checks that the terminal tables carry each
// run's numbers in the right columns (parsed back from the text), that the HTML page is
// well formed and self-contained by an independent Python checker (html.parser and
// xml.etree; tests/eval/check_html.py) and holds the curves, the table values and the
// router heat map; and that missing or bad files give errors naming the run and file.
#include "pmol/eval/report.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/io/atomic_file.h"
#include "tests/model/model_test_util.h"
#include "tests/train/train_test_util.h"

namespace pmol {
namespace {

std::string F4(double v) { return absl::StrFormat("%.4f", v); }
std::string F3(double v) { return absl::StrFormat("%.3f", v); }

void Write(const std::string& path, const std::string& text) {
  ASSERT_TRUE(WriteFileAtomically(path, {text}).ok()) << path;
}

// metrics.jsonl: train steps 1..30 (loss 1/step, accuracy step/40), eval at 10, 20, 30,
// then a torn line.
std::string MetricsText(double eval_accuracy) {
  std::string out;
  for (int s = 1; s <= 30; ++s) {
    out += absl::StrFormat(
        "{\"step\": %d, \"split\": \"train\", \"wall_time\": %.1f, \"loss/total\": %.6f, "
        "\"loss/dpo\": %.6f, \"rewards/accuracy\": %.4f}\n",
        s, 0.5 * s, 1.0 / s, 0.8 / s, s / 40.0);
    if (s % 10 == 0)
      out += absl::StrFormat(
          "{\"step\": %d, \"split\": \"eval\", \"wall_time\": %.1f, \"loss/total\": %.6f, "
          "\"loss/dpo\": %.6f, \"rewards/accuracy\": %.4f}\n",
          s, 0.5 * s, 0.9 / s, 0.7 / s, eval_accuracy);
  }
  return out + "{\"step\": 31, \"split\": \"tr";
}

// A run folder with eval.json from evaluating the tiny model with `config`.
RunSpec MakeRun(const std::string& name, config::RunConfig config, double eval_accuracy) {
  const std::string dir = TempDir() + "/runs/" + name;
  EXPECT_TRUE(MakeDirectories(dir).ok());
  auto run = BuildRunComponents(config, "").value();
  PerturbB(*run);
  EvalResult r = EvaluateDataset(*run, TinyDataset(0, 5), 2, kTinySeqLen, 0, 0).value();
  r.preference_names = {"helpful", "harmless"};
  if (!r.group_names.empty()) r.group_names = {"g_helpful", "g_harmless"};
  EXPECT_TRUE(WriteEvalResult(dir + "/eval.json", r).ok());
  Write(dir + "/metrics.jsonl", MetricsText(eval_accuracy));
  return {name, dir};
}

std::vector<ReportRun> TwoRuns() {
  static const std::vector<RunSpec> specs = [] {
    config::RunConfig lora = TinyConfig();
    lora.mutable_adapter()->set_kind(config::AdapterConfig::LORA);
    return std::vector<RunSpec>{MakeRun("pmol-dpo", TinyConfig(), 0.75),
                                MakeRun("lora-dpo", lora, 0.5)};
  }();
  std::vector<ReportRun> runs;
  for (const RunSpec& s : specs) runs.push_back(LoadRun(s).value());
  return runs;
}

// The whitespace-separated fields of the first line of `text` starting with `first`.
std::vector<std::string> LineFields(const std::string& text, const std::string& first) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!fields.empty() && fields[0] == first) return fields;
  }
  return {};
}

bool HasLine(const std::string& text, const std::vector<std::string>& fields) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const std::vector<std::string> got = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (got == fields) return true;
  }
  return false;
}

TEST(ReportTest, LoadsRunsAndDropsATornLine) {
  const std::vector<ReportRun> runs = TwoRuns();
  EXPECT_EQ(runs[0].log.records.size(), 33u);
  EXPECT_EQ(runs[0].eval.router_layers, (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(runs[1].eval.group_names.empty());
}

TEST(ReportTest, TerminalTablesCarryTheNumbers) {
  const std::vector<ReportRun> runs = TwoRuns();
  const std::string table = EvalTable(runs);
  for (const ReportRun& run : runs) {
    const EvalResult& e = run.eval;
    const std::vector<std::string> want = {run.name,
                                           std::to_string(e.pairs),
                                           F4(e.main),
                                           "30",
                                           "14.5",
                                           F4(e.preferences[0].accuracy),
                                           F4(e.preferences[0].margin),
                                           F4(e.preferences[1].accuracy),
                                           F4(e.preferences[1].margin),
                                           F4(e.overall.accuracy),
                                           F4(e.overall.margin)};
    EXPECT_EQ(LineFields(table, run.name), want) << table;
  }
  const std::vector<std::string> groups = LineFields(table, "helpful");  // the span line
  EXPECT_EQ(groups, (std::vector<std::string>{"helpful", "harmless", "overall"})) << table;

  const std::string router = RouterTables(runs);
  EXPECT_NE(router.find("run pmol-dpo"), std::string::npos) << router;
  EXPECT_EQ(router.find("run lora-dpo"), std::string::npos) << router;
  const EvalResult& e = runs[0].eval;
  EXPECT_EQ(LineFields(router, "data"),
            (std::vector<std::string>{"data", "layer", "g_helpful", "g_harmless", "empty"}));
  // The first "harmless" row is layer 0 of the harmless data.
  const std::vector<double>& layer0 = e.preferences[1].router_mass_by_layer[0];
  EXPECT_EQ(
      LineFields(router, "harmless"),
      (std::vector<std::string>{"harmless", "0", F3(layer0[0]), F3(layer0[1]), F3(layer0[2])}))
      << router;
  const std::vector<double>& all = e.preferences[1].router_mass;
  EXPECT_TRUE(HasLine(router, {"harmless", "all", F3(all[0]), F3(all[1]), F3(all[2])})) << router;
  const std::vector<double>& overall = e.overall.router_mass;
  EXPECT_TRUE(
      HasLine(router, {"all", "data", "all", F3(overall[0]), F3(overall[1]), F3(overall[2])}))
      << router;
  EXPECT_EQ(RouterTables({runs[1]}), "");
}

TEST(ReportTest, HtmlIsSelfContainedAndHoldsTheReport) {
  const std::vector<ReportRun> runs = TwoRuns();
  const std::string path = TempDir() + "/report.html", found_path = TempDir() + "/found.json";
  Write(path, HtmlReport(runs));
  RunPythonOracle("tests/eval/check_html.py", path + " " + found_path);
  const nlohmann::json found = nlohmann::json::parse(ReadFileToString(found_path).value());
  const std::vector<std::string> cells = found["cells"];
  const std::vector<std::string> texts = found["svg_texts"];
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  for (const ReportRun& run : runs) {
    EXPECT_TRUE(has(cells, run.name)) << run.name;
    EXPECT_TRUE(has(cells, F4(run.eval.overall.accuracy)));
    EXPECT_TRUE(has(cells, F4(run.eval.preferences[1].margin)));
    EXPECT_TRUE(has(texts, run.name + " train"));  // legends
    EXPECT_TRUE(has(texts, run.name + " eval"));
  }
  EXPECT_TRUE(has(cells, "helpful"));  // span header
  // Three curve charts (loss/total, loss/dpo, accuracy) and one heat map (PMoL run only).
  EXPECT_EQ(found["counts"]["svg"], 4);
  EXPECT_EQ(found["counts"]["polyline"], 6);              // train lines: 2 runs x 3 charts
  EXPECT_EQ(found["counts"]["circle"], 3 * 2 * (3 + 1));  // eval dots + legend dots
  // Heat map: (2 preferences x (2 layers + all) + all data) rows x 3 columns of cells.
  EXPECT_EQ(found["counts"]["rect"], 3 /*chart frames*/ + 7 * 3);
  EXPECT_TRUE(has(texts, "Objective loss (loss/dpo)"));
  EXPECT_TRUE(has(texts, "Run pmol-dpo"));
  EXPECT_TRUE(has(texts, "harmless / layer 1"));
  EXPECT_TRUE(has(texts, F3(runs[0].eval.preferences[1].router_mass_by_layer[1][1])));
  EXPECT_TRUE(has(texts, "g_harmless"));
}

TEST(ReportTest, MissingOrBadFilesNameTheRunAndFile) {
  const std::vector<ReportRun> runs = TwoRuns();
  const std::string dir = TempDir() + "/runs/broken";
  ASSERT_TRUE(MakeDirectories(dir).ok());
  Write(dir + "/metrics.jsonl", MetricsText(0.5));
  absl::StatusOr<ReportRun> r = LoadRun({"broken", dir});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(),
            "run broken: cannot open " + dir + "/eval.json: No such file or directory");

  std::string eval = ReadFileToString(runs[0].dir + "/eval.json").value();
  nlohmann::json j = nlohmann::json::parse(eval);
  j["overall"].erase("margin");
  Write(dir + "/eval.json", j.dump());
  r = LoadRun({"broken", dir});
  EXPECT_EQ(r.status().message(), "run broken: " + dir + "/eval.json: overall.margin: missing");

  Write(dir + "/eval.json", eval);
  Write(dir + "/metrics.jsonl", "{\"step\": 1, \"split\": \"train\"}\n{\"split\": \"train\"}\n");
  r = LoadRun({"broken", dir});
  EXPECT_EQ(r.status().message(), "run broken: " + dir + "/metrics.jsonl:2: \"step\" is missing or not an int64");
  std::remove((dir + "/metrics.jsonl").c_str());
  r = LoadRun({"broken", dir});
  EXPECT_NE(r.status().message().find("metrics.jsonl"), absl::string_view::npos);
  ASSERT_TRUE(LoadRun({"fixed", runs[0].dir}).ok());
}

TEST(ReportTest, ParseRunSpec) {
  const RunSpec s = ParseRunSpec("pmol=/runs/a=b").value();
  EXPECT_EQ(s.name, "pmol");
  EXPECT_EQ(s.dir, "/runs/a=b");
  for (const char* bad : {"pmol", "=dir", "pmol="}) {
    absl::StatusOr<RunSpec> r = ParseRunSpec(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("expected NAME=DIR"), absl::string_view::npos);
  }
}

}  // namespace
}  // namespace pmol
