// MetricsLog: the JSONL text exactly (wall_time aside), the events file decoded by the
// independent reader tests/oracles/read_tfevents.py (TF's field numbers hard-coded there)
// to the same tags, steps and float32-rounded values; resume at step k drops lines with
// step > k and a torn last line and starts a second events file that sorts after the
// first; non-finite values are null in JSONL and NaN when read back; bad lines and
// unwritable paths are errors naming the file.
#include "pmol/train/metrics_log.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/io/read_tfevents_oracle.h"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Replaces the wall_time number with "W" after checking it lies in [lo, hi].
std::string MaskWallTime(const std::string& line, double lo, double hi) {
  static const std::regex kWallTime("\"wall_time\": ([-+.eE0-9]+)");
  std::smatch m;
  if (!std::regex_search(line, m, kWallTime)) {
    ADD_FAILURE() << "no wall_time in " << line;
    return line;
  }
  const double t = std::stod(m[1].str());
  EXPECT_GE(t, lo - 1e-3) << line;
  EXPECT_LE(t, hi + 1e-3) << line;
  return std::regex_replace(line, kWallTime, "\"wall_time\": W");
}

std::vector<std::string> EventFiles(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The reader's value: a number, or "nan"/"inf"/"-inf".
double OracleFloat(const nlohmann::json& v) {
  if (v.is_string()) {
    if (v == "nan") return kNaN;
    if (v == "inf") return kInf;
    if (v == "-inf") return -kInf;
    ADD_FAILURE() << "unexpected " << v;
  }
  return v.get<double>();
}

void ExpectSameDouble(double got, double want, const std::string& what) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what << ": " << got;
  } else {
    EXPECT_EQ(got, want) << what;
  }
}

struct Step {
  int64_t step;
  std::string split;
  std::map<std::string, double> scalars;
};

const std::vector<Step>& SampleSteps() {
  static const std::vector<Step>* steps = new std::vector<Step>{
      {1, "train", {{"loss/total", 0.6931471805599453}, {"lr", 1e-05}, {"grad_norm", 3.0}}},
      {2, "train", {{"loss/total", 0.5}, {"lr", 2e-05}, {"grad_norm", 1.25}}},
      {2, "eval", {{"accuracy", 0.75}, {"loss/dpo", 0.1}}},
      {3, "train", {{"loss/total", kNaN}, {"lr", 3e-05}, {"grad_norm", kInf}}},
      {4, "train", {{"loss/total", -0.0}, {"lr", 4e-05}, {"grad_norm", -kInf}}},
  };
  return *steps;
}

// The JSONL lines SampleSteps() must produce: names sorted, shortest round-trip numbers,
// non-finite as null.
const std::vector<std::string>& SampleLines() {
  static const std::vector<std::string>* lines = new std::vector<std::string>{
      R"({"step": 1, "split": "train", "wall_time": W, "grad_norm": 3.0, "loss/total": 0.6931471805599453, "lr": 1e-05})",
      R"({"step": 2, "split": "train", "wall_time": W, "grad_norm": 1.25, "loss/total": 0.5, "lr": 2e-05})",
      R"({"step": 2, "split": "eval", "wall_time": W, "accuracy": 0.75, "loss/dpo": 0.1})",
      R"({"step": 3, "split": "train", "wall_time": W, "grad_norm": null, "loss/total": null, "lr": 3e-05})",
      R"({"step": 4, "split": "train", "wall_time": W, "grad_norm": null, "loss/total": -0.0, "lr": 4e-05})",
  };
  return *lines;
}

void WriteSteps(MetricsLog* log, const std::vector<Step>& steps) {
  for (const Step& s : steps) ASSERT_TRUE(log->Write(s.step, s.split, s.scalars).ok());
  ASSERT_TRUE(log->Flush().ok());
}

// The events file decodes (independent reader) to file_version then `steps`.
void ExpectEvents(const std::string& path, const std::vector<Step>& steps, double lo, double hi) {
  TfEventsOracleResult read = ReadTfEventsWithOracle(path, /*raw_records=*/false);
  ASSERT_TRUE(ExitedWith(read.run, 0));
  ASSERT_EQ(read.json.size(), steps.size() + 1) << read.json.dump();
  EXPECT_EQ(read.json[0]["file_version"], "brain.Event:2");
  EXPECT_FALSE(read.json[0].contains("step"));
  for (size_t i = 0; i < steps.size(); ++i) {
    const nlohmann::json& event = read.json[i + 1];
    SCOPED_TRACE(event.dump());
    EXPECT_EQ(event["step"].get<int64_t>(), steps[i].step);
    const double t = OracleFloat(event["wall_time"]);
    EXPECT_GE(t, lo - 1e-3);
    EXPECT_LE(t, hi + 1e-3);
    ASSERT_EQ(event["summary"].size(), steps[i].scalars.size());
    size_t k = 0;
    for (const auto& [name, value] : steps[i].scalars) {
      const nlohmann::json& v = event["summary"][k++];
      EXPECT_EQ(v["tag"], steps[i].split + "/" + name);
      ExpectSameDouble(OracleFloat(v["simple_value"]), static_cast<float>(value), name);
    }
  }
}

void ExpectRecords(const std::vector<MetricsRecord>& got, const std::vector<Step>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].step, want[i].step) << i;
    EXPECT_EQ(got[i].split, want[i].split) << i;
    ASSERT_EQ(got[i].scalars.size(), want[i].scalars.size()) << i;
    for (const auto& [name, value] : want[i].scalars) {
      ASSERT_EQ(got[i].scalars.count(name), 1u) << name;
      // Non-finite values are null in JSON, read back as NaN.
      ExpectSameDouble(got[i].scalars.at(name), std::isfinite(value) ? value : kNaN, name);
    }
  }
}

TEST(MetricsLogTest, JsonlTextEventsAndReadBack) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::string jsonl = dir + "/run/metrics.jsonl";  // parent created by Open
  const std::string tb = dir + "/tb";
  WriteFile(dir + "/stale.jsonl", "old\n");
  const double lo = Now();
  absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, tb, -1);
  ASSERT_TRUE(log.ok()) << log.status();
  WriteSteps(log->get(), SampleSteps());
  const double hi = Now();

  const std::vector<std::string> lines = Lines(ReadFile(jsonl));
  ASSERT_EQ(lines.size(), SampleLines().size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(MaskWallTime(lines[i], lo, hi), SampleLines()[i]);
  }
  EXPECT_EQ(ReadFile(jsonl).back(), '\n');

  const std::vector<std::string> files = EventFiles(tb);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], (*log)->events_path());
  const std::string name = std::filesystem::path(files[0]).filename().string();
  EXPECT_TRUE(std::regex_match(name, std::regex(R"(events\.out\.tfevents\.\d{10}\..+\.\d+\.pmol)")))
      << name;
  ExpectEvents(files[0], SampleSteps(), lo, hi);

  absl::StatusOr<std::vector<MetricsRecord>> records = ReadMetricsJsonl(jsonl);
  ASSERT_TRUE(records.ok()) << records.status();
  ExpectRecords(*records, SampleSteps());
}

TEST(MetricsLogTest, FreshRunTruncatesAndEitherOutputIsOptional) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::string jsonl = dir + "/metrics.jsonl";
  WriteFile(jsonl, "{\"step\": 99, \"split\": \"train\", \"x\": 1}\n");
  {
    absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, "", -1);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->events_path(), "");
    WriteSteps(log->get(), {SampleSteps()[1]});
  }
  EXPECT_EQ(Lines(ReadFile(jsonl)).size(), 1u);
  {
    absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open("", dir + "/tb", -1);
    ASSERT_TRUE(log.ok()) << log.status();
    WriteSteps(log->get(), {SampleSteps()[1]});
    ExpectEvents((*log)->events_path(), {SampleSteps()[1]}, 0, 1e12);
  }
}

TEST(MetricsLogTest, ResumeKeepsStepsUpToKAndDropsATornLine) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::string jsonl = dir + "/metrics.jsonl";
  const std::string tb = dir + "/tb";
  const double lo = Now();
  std::string first_events;
  {
    absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, tb, -1);
    ASSERT_TRUE(log.ok()) << log.status();
    WriteSteps(log->get(), SampleSteps());
    first_events = (*log)->events_path();
  }
  // A killed run's torn last line.
  WriteFile(jsonl, ReadFile(jsonl) + R"({"step": 5, "split": "train", "wall_time": 17)");
  absl::StatusOr<std::vector<MetricsRecord>> before = ReadMetricsJsonl(jsonl);
  ASSERT_TRUE(before.ok()) << before.status();
  ExpectRecords(*before, SampleSteps());  // the torn line is dropped

  // Resume from the checkpoint of step 2: steps 3 and 4 are replayed.
  absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, tb, 2);
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<std::string> lines = Lines(ReadFile(jsonl));
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(MaskWallTime(lines[i], lo, Now()), SampleLines()[i]);

  const std::vector<Step> replay = {
      {3, "train", {{"loss/total", 0.25}, {"lr", 3e-05}, {"grad_norm", 2.0}}}};
  WriteSteps(log->get(), replay);
  const double hi = Now();
  lines = Lines(ReadFile(jsonl));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(
      MaskWallTime(lines[3], lo, hi),
      R"({"step": 3, "split": "train", "wall_time": W, "grad_norm": 2.0, "loss/total": 0.25, "lr": 3e-05})");
  absl::StatusOr<std::vector<MetricsRecord>> after = ReadMetricsJsonl(jsonl);
  ASSERT_TRUE(after.ok()) << after.status();
  ExpectRecords(*after, {SampleSteps()[0], SampleSteps()[1], SampleSteps()[2], replay[0]});

  // A second events file, after the first in name order (TensorBoard's reading order),
  // starting with its own file_version; the first is untouched.
  const std::vector<std::string> files = EventFiles(tb);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0], first_events);
  EXPECT_EQ(files[1], (*log)->events_path());
  ExpectEvents(files[0], SampleSteps(), lo, hi);
  ExpectEvents(files[1], replay, lo, hi);
}

TEST(MetricsLogTest, ResumeBeyondTheLastStepKeepsEveryWholeLine) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::string jsonl = dir + "/metrics.jsonl";
  {
    absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, "", -1);
    ASSERT_TRUE(log.ok()) << log.status();
    WriteSteps(log->get(), SampleSteps());
  }
  WriteFile(jsonl, ReadFile(jsonl) + "{\"st");
  absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, "", 100);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(Lines(ReadFile(jsonl)).size(), SampleSteps().size());
  EXPECT_EQ(ReadFile(jsonl).back(), '\n');
  // A resumed run with no metrics file yet starts one.
  std::filesystem::remove(jsonl);
  log = MetricsLog::Open(jsonl, "", 3);
  ASSERT_TRUE(log.ok()) << log.status();
  WriteSteps(log->get(), {SampleSteps()[3]});
  EXPECT_EQ(Lines(ReadFile(jsonl)).size(), 1u);
}

TEST(MetricsLogTest, AWholeLastLineWithoutNewlineIsKept) {
  const std::string path = FreshDir(CurrentTestName()) + "/metrics.jsonl";
  WriteFile(path,
            "{\"step\": 1, \"split\": \"train\", \"a\": 1}\n{\"step\": 2, \"split\": "
            "\"train\", \"a\": null}");
  absl::StatusOr<std::vector<MetricsRecord>> records = ReadMetricsJsonl(path);
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 2u);
  EXPECT_TRUE(std::isnan((*records)[1].scalars.at("a")));
}

TEST(MetricsLogTest, BadLinesAreErrorsNamingFileAndLine) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"step\": 1, \"split\": \"train\"}\nnot json\n{\"step\": 2, \"split\": \"t\"}\n",
       ":2: not a JSON object"},
      {"{\"split\": \"train\", \"a\": 1}\n", ":1: \"step\" is missing"},
      {"{\"step\": 1.5, \"split\": \"train\"}\n", ":1: \"step\" is missing or not an int64"},
      {"{\"step\": 1, \"split\": 3}\n", ":1: \"split\""},
      {"\n{\"step\": 1, \"split\": \"train\", \"a\": \"x\"}\n", ":2: \"a\" is not a number"},
  };
  int n = 0;
  for (const auto& [text, message] : cases) {
    const std::string path = dir + "/bad" + std::to_string(++n) + ".jsonl";
    WriteFile(path, text);
    absl::StatusOr<std::vector<MetricsRecord>> records = ReadMetricsJsonl(path);
    ASSERT_FALSE(records.ok()) << text;
    EXPECT_NE(std::string(records.status().message()).find(path + message), std::string::npos)
        << records.status();
    // Resuming from a damaged file fails the same way and leaves it alone.
    absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(path, "", 5);
    ASSERT_FALSE(log.ok());
    EXPECT_NE(std::string(log.status().message()).find(path + message), std::string::npos)
        << log.status();
    EXPECT_EQ(ReadFile(path), text);
  }
}

TEST(MetricsLogTest, InvalidNamesAreRejected) {
  const std::string dir = FreshDir(CurrentTestName());
  absl::StatusOr<std::unique_ptr<MetricsLog>> log =
      MetricsLog::Open(dir + "/m.jsonl", dir + "/tb", -1);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE((*log)->Write(1, "", {{"a", 1.0}}).ok());
  for (const std::string& name : {"", "step", "split", "wall_time"}) {
    EXPECT_FALSE((*log)->Write(1, "train", {{name, 1.0}}).ok()) << name;
  }
  EXPECT_EQ(ReadFile(dir + "/m.jsonl"), "");
}

TEST(MetricsLogTest, UnwritablePathsAreErrorsNamingThem) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::string file = dir + "/a_file";
  WriteFile(file, "x");
  struct Case {
    std::string jsonl, tb;
    int64_t resume_step;
    std::string named;
  };
  const std::vector<Case> cases = {
      {file + "/metrics.jsonl", "", -1, file + "/metrics.jsonl"},
      {file + "/metrics.jsonl", "", 3, file + "/metrics.jsonl"},
      {file + "/sub/metrics.jsonl", "", -1, file + "/sub/metrics.jsonl"},
      {dir, "", -1, dir},  // a directory is not a file
      {"", file, -1, file},
      {"", file + "/tb", -1, file + "/tb"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::unique_ptr<MetricsLog>> log =
        MetricsLog::Open(c.jsonl, c.tb, c.resume_step);
    ASSERT_FALSE(log.ok()) << c.jsonl << " " << c.tb;
    EXPECT_NE(std::string(log.status().message()).find(c.named), std::string::npos) << log.status();
  }
}

}  // namespace
}  // namespace pmol
