// MetricsHistory: series sorted by step with the later record of a repeated step winning
// (a resumed run), the last record of a split, the training wall time, and a read error
// that names the file. (Parsing itself is tested with the writer, tests/train/metrics_log_test.)
#include "pmol/eval/metrics_history.h"

#include <cmath>

#include "gtest/gtest.h"
#include "pmol/io/atomic_file.h"

namespace pmol {
namespace {

std::string TempPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp ? tmp : "/tmp") + "/" + name;
}

TEST(MetricsHistoryTest, SeriesLastAndTrainSeconds) {
  const std::string path = TempPath("m.jsonl");
  ASSERT_TRUE(WriteFileAtomically(path, {
      R"({"step": 1, "split": "train", "wall_time": 10.0, "loss/total": 0.9})" "\n"
      R"({"step": 2, "split": "train", "wall_time": 11.5, "loss/total": 0.8})" "\n"
      R"({"step": 2, "split": "eval", "wall_time": 12.0, "loss/total": 0.85})" "\n"
      R"({"step": 2, "split": "train", "wall_time": 20.0, "loss/total": 0.7})" "\n"
      R"({"step": 3, "split": "train", "wall_time": 21.0, "loss/total": null})" "\n"}).ok());
  absl::StatusOr<MetricsHistory> h = ReadMetricsHistory(path);
  ASSERT_TRUE(h.ok()) << h.status();
  const auto train = h->Series("train", "loss/total");
  ASSERT_EQ(train.size(), 3u);
  EXPECT_EQ(train[0], (std::pair<int64_t, double>{1, 0.9}));
  EXPECT_EQ(train[1], (std::pair<int64_t, double>{2, 0.7}));  // the resumed record wins
  EXPECT_TRUE(std::isnan(train[2].second));
  EXPECT_EQ(h->Series("eval", "loss/total"), (std::vector<std::pair<int64_t, double>>{{2, 0.85}}));
  EXPECT_TRUE(h->Series("train", "missing").empty());
  ASSERT_NE(h->Last("eval"), nullptr);
  EXPECT_EQ(h->Last("eval")->step, 2);
  EXPECT_EQ(h->Last("test"), nullptr);
  EXPECT_DOUBLE_EQ(h->TrainSeconds(), 11.0);
}

TEST(MetricsHistoryTest, ReadNamesTheFile) {
  absl::StatusOr<MetricsHistory> h = ReadMetricsHistory(TempPath("none/metrics.jsonl"));
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("none/metrics.jsonl"), absl::string_view::npos);
}

}  // namespace
}  // namespace pmol
