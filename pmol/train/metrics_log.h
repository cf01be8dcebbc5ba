// Training metrics, written twice: a JSONL file (one object per line,
//   {"step": 12, "split": "train", "wall_time": 1700000000.25, "loss/total": 0.69, ...}
// with the scalar names sorted and non-finite values as null, since JSON has no NaN) and
// a TensorBoard events file (a TFRecord of Event protos, proto/tensorboard_event.proto:
// first file_version "brain.Event:2", then one Event per Write with one scalar
// Summary.Value per metric, tag "<split>/<name>", value rounded to float32).
// Each JSONL line goes to the kernel in one write(), so a killed run leaves whole lines
// and at most one torn (unterminated) last line, which readers and resume drop.
// Resume at step k keeps the JSONL lines with step <= k (rewritten atomically) and starts
// a new events file named after the old ones, so TensorBoard, reading files in name
// order, sees the replayed steps last and shows their latest values.
#ifndef PMOL_TRAIN_METRICS_LOG_H_
#define PMOL_TRAIN_METRICS_LOG_H_

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pmol/io/tfrecord_writer.h"

namespace pmol {

class MetricsLog {
 public:
  // jsonl_path: the metrics JSONL file (empty: none; missing parent folders are created).
  // tensorboard_dir: folder for a new events file (empty: none; created if missing).
  // resume_step < 0: a fresh run (the JSONL is truncated). resume_step >= 0: a resumed
  // run: the JSONL keeps only its whole lines whose "step" <= resume_step (rewritten
  // atomically), then appends. Errors name the file (and line).
  static absl::StatusOr<std::unique_ptr<MetricsLog>> Open(const std::string& jsonl_path,
                                                          const std::string& tensorboard_dir,
                                                          int64_t resume_step);
  ~MetricsLog();

  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  // One JSONL line and one Event for `scalars` at `step`. Names and split must be
  // non-empty and names must not be "step", "split" or "wall_time".
  absl::Status Write(int64_t step, const std::string& split,
                     const std::map<std::string, double>& scalars);
  // Both files to disk (fsync).
  absl::Status Flush();

  const std::string& jsonl_path() const { return jsonl_path_; }
  // The events file this log writes ("" when none):
  // <dir>/events.out.tfevents.<unix seconds>.<hostname>.<pid>[_<n>].pmol, with _<n>
  // (n = 1, 2, ...) when that name already exists (two opens in the same second).
  const std::string& events_path() const;

 private:
  MetricsLog() = default;

  std::string jsonl_path_;
  int jsonl_fd_ = -1;
  std::unique_ptr<TfRecordWriter> events_;
};

// A metrics JSONL read back (for reports and tests): one record per whole line; null
// values read as NaN; "wall_time" is kept apart from the scalars. A final line without its newline that is
// not a complete JSON object (a torn write) is dropped. Errors name path:line.
struct MetricsRecord {
  int64_t step;
  std::string split;
  std::map<std::string, double> scalars;
  double wall_time = std::numeric_limits<double>::quiet_NaN();  // seconds since the epoch
};
absl::StatusOr<std::vector<MetricsRecord>> ReadMetricsJsonl(const std::string& path);

}  // namespace pmol

#endif  // PMOL_TRAIN_METRICS_LOG_H_
