// `pmol report` end to end (the binary as a subprocess) on hand-written run folders with
// known numbers: every --run counts (in "--run=V" and "--run V" form), the table and the
// router table are printed, the HTML page is written; a missing eval.json, a malformed
// --run, a repeated name and no --run at all exit 1 with a message naming the problem.
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/train/evaluator.h"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

EvalSplit Split(int64_t pairs, double accuracy, double margin, bool router) {
  EvalSplit s;
  s.pairs = pairs;
  s.loss = 0.5;
  s.accuracy = accuracy;
  s.margin = margin;
  s.reward_chosen = margin / 2;
  s.reward_rejected = -margin / 2;
  if (router) {
    s.router_positions = 10 * pairs;
    s.router_mass = {0.625, 0.25, 0.125};
    s.router_mass_by_layer = {{0.75, 0.125, 0.125}, {0.5, 0.375, 0.125}};
  }
  return s;
}

// A run folder: eval.json with the given accuracies, a 3-step metrics.jsonl.
std::string MakeRun(const std::string& name, bool router, double accuracy) {
  const std::string dir = FreshDir(name);
  EvalResult e;
  e.preference_names = {"helpful", "harmless"};
  if (router) {
    e.group_names = {"helpful", "harmless"};
    e.router_layers = {0, 1};
  }
  e.pairs = 8;
  e.tokens = 100;
  e.main = e.loss = 0.625;
  e.preferences = {Split(4, accuracy, 0.25, router), Split(4, 0.5, 0.125, router)};
  e.overall = Split(8, (accuracy + 0.5) / 2, 0.1875, router);
  EXPECT_TRUE(WriteEvalResult(dir + "/eval.json", e).ok());
  WriteFile(dir + "/metrics.jsonl",
            "{\"step\": 1, \"split\": \"train\", \"wall_time\": 1.5, \"loss/total\": 0.7}\n"
            "{\"step\": 2, \"split\": \"train\", \"wall_time\": 3.0, \"loss/total\": 0.6}\n"
            "{\"step\": 2, \"split\": \"eval\", \"wall_time\": 3.5, \"loss/total\": 0.65}\n");
  return dir;
}

TEST(ReportCommandTest, PrintsTablesAndWritesHtml) {
  const std::string pmol = MakeRun("pmol_run", true, 0.75),
                    lora = MakeRun("lora_run", false, 0.625);
  const std::string out = FreshDir("report_out") + "/report.html";
  CommandResult r =
      RunPmol({"report", "--run=pmol-dpo=" + pmol, "--run", "lora-dpo=" + lora, "--out=" + out});
  ASSERT_TRUE(ExitedWith(r, 0)) << r.Describe();
  const std::string& text = r.stdout_text;
  EXPECT_NE(text.find("pmol-dpo"), std::string::npos) << text;
  EXPECT_NE(text.find("lora-dpo"), std::string::npos) << text;
  // pmol-dpo: pairs, main loss, steps, time, helpful acc/margin, harmless, overall.
  EXPECT_NE(text.find("0.6250      2       1.5  0.7500  0.2500  0.5000  0.1250  0.6250  0.1875"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("Router mass per expert group, run pmol-dpo"), std::string::npos) << text;
  EXPECT_EQ(text.find("run lora-dpo ("), std::string::npos) << text;
  EXPECT_NE(text.find("helpful       1    0.500     0.375  0.125"), std::string::npos) << text;
  EXPECT_NE(text.find("wrote " + out), std::string::npos);
  const std::string html = ReadFile(out);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("lora-dpo"), std::string::npos);
  EXPECT_NE(html.find("<td>0.7500</td>"), std::string::npos);
}

TEST(ReportCommandTest, TablesOnlyWithoutOut) {
  const std::string pmol = MakeRun("only_run", true, 0.75);
  CommandResult r = RunPmol({"report", "--run=only=" + pmol});
  ASSERT_TRUE(ExitedWith(r, 0)) << r.Describe();
  EXPECT_EQ(r.stdout_text.find("wrote"), std::string::npos);
}

TEST(ReportCommandTest, ErrorsNameTheProblem) {
  const std::string good = MakeRun("good_run", false, 0.75);
  const std::string empty = FreshDir("empty_run");
  CommandResult r = RunPmol({"report", "--run=a=" + good, "--run=b=" + empty});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"run b: ", empty + "/metrics.jsonl"}));

  WriteFile(empty + "/metrics.jsonl", "");
  r = RunPmol({"report", "--run=b=" + empty});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"run b: ", empty + "/eval.json", "No such file"}));

  r = RunPmol({"report", "--run=" + good});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"expected NAME=DIR"}));

  r = RunPmol({"report", "--run=a=" + good, "--run=a=" + good});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"the name a is used twice"}));

  r = RunPmol({"report"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"--run=NAME=DIR is required"}));
}

}  // namespace
}  // namespace pmol
