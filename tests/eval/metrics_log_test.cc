// metrics.jsonl parsing: records, null as NaN, ignored non-numeric fields, a torn last
// line dropped, any other bad line an error naming file:line and field, and Series'
// rule that a repeated step (a resumed run) takes the later value.
#include "pmol/eval/metrics_log.h"

#include <cmath>

#include "gtest/gtest.h"
#include "pmol/io/atomic_file.h"
#include "tests/model/model_test_util.h"

namespace pmol {
namespace {

TEST(MetricsLogTest, ParsesRecords) {
  const std::string text =
      "{\"step\": 1, \"split\": \"train\", \"wall_time\": 0.5, \"loss/total\": 0.7, "
      "\"rewards/accuracy/helpful\": 0.25, \"note\": \"x\", \"loss/group\": null}\n"
      "\n"
      "{\"step\": 2, \"split\": \"eval\", \"loss/total\": 0.6}\n";
  const MetricsLog log = ParseMetricsLog(text, "m.jsonl").value();
  ASSERT_EQ(log.records.size(), 2u);
  EXPECT_EQ(log.torn_lines, 0);
  const MetricsRecord& r = log.records[0];
  EXPECT_EQ(r.step, 1);
  EXPECT_EQ(r.split, "train");
  EXPECT_EQ(r.wall_time, 0.5);
  EXPECT_EQ(r.values.size(), 3u);  // "note" ignored
  EXPECT_EQ(r.values.at("rewards/accuracy/helpful"), 0.25);
  EXPECT_TRUE(std::isnan(r.values.at("loss/group")));
  EXPECT_TRUE(std::isnan(log.records[1].wall_time));
  EXPECT_EQ(log.Last("eval"), &log.records[1]);
  EXPECT_EQ(log.Last("test"), nullptr);
}

TEST(MetricsLogTest, TornLastLineIsDroppedOtherBadLinesAreErrors) {
  const std::string good = "{\"step\": 1, \"split\": \"train\", \"loss/total\": 0.7}\n";
  MetricsLog log = ParseMetricsLog(good + "{\"step\": 2, \"spl", "m.jsonl").value();
  EXPECT_EQ(log.records.size(), 1u);
  EXPECT_EQ(log.torn_lines, 1);
  // A complete last line without its newline is kept.
  log = ParseMetricsLog(good + "{\"step\": 2, \"split\": \"eval\"}", "m.jsonl").value();
  EXPECT_EQ(log.records.size(), 2u);
  EXPECT_EQ(log.torn_lines, 0);

  auto error = [](const std::string& text) {
    absl::StatusOr<MetricsLog> r = ParseMetricsLog(text, "run/metrics.jsonl");
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  EXPECT_EQ(error(good + "{\"step\": 2, \"spl\n" + good), "run/metrics.jsonl:2: not valid JSON");
  EXPECT_EQ(error(good + "{\"step\": 2, \"spl\n"), "run/metrics.jsonl:2: not valid JSON");
  EXPECT_EQ(error("{\"split\": \"train\"}\n"), "run/metrics.jsonl:1: step: missing");
  EXPECT_EQ(error("{\"step\": -1, \"split\": \"train\"}\n"),
            "run/metrics.jsonl:1: step: expected a non-negative integer");
  EXPECT_EQ(error(good + "\n{\"step\": 3}\n"), "run/metrics.jsonl:3: split: missing");
  EXPECT_EQ(error("[1, 2]\n"), "run/metrics.jsonl:1: expected a JSON object");
}

TEST(MetricsLogTest, SeriesSortsAndLaterRecordsWin) {
  const std::string text =
      "{\"step\": 3, \"split\": \"train\", \"loss/total\": 0.3}\n"
      "{\"step\": 1, \"split\": \"train\", \"loss/total\": 0.9}\n"
      "{\"step\": 2, \"split\": \"train\", \"loss/total\": 0.5}\n"
      "{\"step\": 2, \"split\": \"eval\", \"loss/total\": 0.4}\n"
      "{\"step\": 2, \"split\": \"train\", \"loss/total\": 0.45}\n"
      "{\"step\": 4, \"split\": \"train\", \"other\": 1}\n";
  const MetricsLog log = ParseMetricsLog(text, "m").value();
  EXPECT_EQ(log.Series("train", "loss/total"),
            (std::vector<std::pair<int64_t, double>>{{1, 0.9}, {2, 0.45}, {3, 0.3}}));
  EXPECT_EQ(log.Series("eval", "loss/total"), (std::vector<std::pair<int64_t, double>>{{2, 0.4}}));
  EXPECT_TRUE(log.Series("train", "missing").empty());
}

TEST(MetricsLogTest, ReadNamesTheFile) {
  absl::StatusOr<MetricsLog> r = ReadMetricsLog(TempDir() + "/none/metrics.jsonl");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("none/metrics.jsonl"), absl::string_view::npos);
  const std::string path = TempDir() + "/metrics.jsonl";
  ASSERT_TRUE(WriteFileAtomically(path, {"{\"step\": 5, \"split\": \"train\"}\n"}).ok());
  EXPECT_EQ(ReadMetricsLog(path).value().records.at(0).step, 5);
}

}  // namespace
}  // namespace pmol
