// Metrics as JSONL lines and TensorBoard scalar events; see metrics_log.h.
#include "pmol/train/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/io/atomic_file.h"
#include "proto/tensorboard_event.pb.h"

namespace pmol {
namespace {

constexpr char kFileVersion[] = "brain.Event:2";

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

double WallTimeNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return "";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status WriteAll(int fd, std::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// A JSON number (shortest text that reads back as the same double) or null.
std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  return nlohmann::json(value).dump();
}

struct JsonlLine {
  std::string_view text;  // without its newline
  MetricsRecord record;
};

absl::Status LineError(const std::string& path, int line, const std::string& what) {
  return absl::DataLossError(absl::StrCat(path, ":", line, ": ", what));
}

absl::StatusOr<MetricsRecord> ParseRecord(const nlohmann::json& j, const std::string& path,
                                          int line) {
  MetricsRecord record;
  const auto step = j.find("step");
  if (step == j.end() || !step->is_number_integer() ||
      (step->is_number_unsigned() &&
       step->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    return LineError(path, line, "\"step\" is missing or not an int64");
  }
  record.step = step->get<int64_t>();
  const auto split = j.find("split");
  if (split == j.end() || !split->is_string()) {
    return LineError(path, line, "\"split\" is missing or not a string");
  }
  record.split = split->get<std::string>();
  const auto wall_time = j.find("wall_time");
  if (wall_time != j.end() && wall_time->is_number()) record.wall_time = wall_time->get<double>();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "step" || it.key() == "split" || it.key() == "wall_time") continue;
    if (it->is_null()) {
      record.scalars[it.key()] = std::numeric_limits<double>::quiet_NaN();
    } else if (it->is_number()) {
      record.scalars[it.key()] = it->get<double>();
    } else {
      return LineError(path, line, absl::StrCat("\"", it.key(), "\" is not a number or null"));
    }
  }
  return record;
}

// The whole lines of a metrics JSONL. Blank lines are skipped; a final line with no
// newline that does not parse is a torn write and is dropped; any other bad line is an
// error naming path:line.
absl::StatusOr<std::vector<JsonlLine>> ParseJsonl(std::string_view contents,
                                                  const std::string& path) {
  std::vector<JsonlLine> lines;
  int line_number = 0;
  while (!contents.empty()) {
    ++line_number;
    const size_t newline = contents.find('\n');
    const bool terminated = newline != std::string_view::npos;
    const std::string_view text = contents.substr(0, terminated ? newline : contents.size());
    contents.remove_prefix(terminated ? newline + 1 : contents.size());
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      if (!terminated) break;  // torn last line
      return LineError(path, line_number, "not a JSON object");
    }
    absl::StatusOr<MetricsRecord> record = ParseRecord(j, path, line_number);
    if (!record.ok()) return record.status();
    lines.push_back({text, *std::move(record)});
  }
  return lines;
}

std::string HostName() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof(buffer) - 1) != 0 || buffer[0] == '\0') return "localhost";
  std::string host(buffer);
  for (char& c : host) {
    if (c == '/') c = '_';
  }
  return host;
}

// <dir>/events.out.tfevents.<secs>.<host>.<pid>.pmol, or with "_<n>" after the pid when
// taken: '_' sorts after '.', so a later file of the same second also sorts later.
std::string NewEventsPath(const std::string& dir) {
  const std::string host = HostName();
  const int64_t seconds = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  const std::string base =
      absl::StrCat(dir, "/events.out.tfevents.", seconds, ".", host, ".", ::getpid());
  std::string path = absl::StrCat(base, ".pmol");
  for (int n = 1; std::filesystem::exists(path); ++n) path = absl::StrCat(base, "_", n, ".pmol");
  return path;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsLog>> MetricsLog::Open(const std::string& jsonl_path,
                                                             const std::string& tensorboard_dir,
                                                             int64_t resume_step) {
  std::unique_ptr<MetricsLog> log(new MetricsLog());
  log->jsonl_path_ = jsonl_path;
  if (!jsonl_path.empty()) {
    const std::string parent = ParentDir(jsonl_path);
    if (!parent.empty()) {
      if (absl::Status s = MakeDirectories(parent); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("metrics file ", jsonl_path, ": ", s.message()));
      }
    }
    int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
    if (resume_step < 0) {
      flags |= O_TRUNC;
    } else if (std::filesystem::exists(jsonl_path)) {
      absl::StatusOr<std::string> contents = ReadFileToString(jsonl_path);
      if (!contents.ok()) return contents.status();
      absl::StatusOr<std::vector<JsonlLine>> lines = ParseJsonl(*contents, jsonl_path);
      if (!lines.ok()) return lines.status();
      std::vector<std::string_view> kept;
      for (const JsonlLine& line : *lines) {
        if (line.record.step > resume_step) continue;
        kept.push_back(line.text);
        kept.push_back("\n");
      }
      if (absl::Status s = WriteFileAtomically(jsonl_path, kept); !s.ok()) return s;
    }
    log->jsonl_fd_ = ::open(jsonl_path.c_str(), flags, 0644);
    if (log->jsonl_fd_ < 0) return ErrnoError("cannot open metrics file", jsonl_path);
  }
  if (!tensorboard_dir.empty()) {
    if (absl::Status s = MakeDirectories(tensorboard_dir); !s.ok()) return s;
    absl::StatusOr<std::unique_ptr<TfRecordWriter>> writer =
        TfRecordWriter::Open(NewEventsPath(tensorboard_dir));
    if (!writer.ok()) return writer.status();
    log->events_ = *std::move(writer);
    tensorboard::Event event;
    event.set_wall_time(WallTimeNow());
    event.set_file_version(kFileVersion);
    if (absl::Status s = log->events_->Write(event.SerializeAsString()); !s.ok()) return s;
    if (absl::Status s = log->events_->Flush(); !s.ok()) return s;
  }
  return log;
}

MetricsLog::~MetricsLog() {
  if (jsonl_fd_ >= 0) ::close(jsonl_fd_);
}

const std::string& MetricsLog::events_path() const {
  static const std::string* const kNone = new std::string();
  return events_ ? events_->path() : *kNone;
}

absl::Status MetricsLog::Write(int64_t step, const std::string& split,
                               const std::map<std::string, double>& scalars) {
  if (split.empty()) return absl::InvalidArgumentError("metrics: empty split name");
  for (const auto& [name, value] : scalars) {
    if (name.empty() || name == "step" || name == "split" || name == "wall_time") {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics: invalid scalar name \"", name, "\" (split ", split, ")"));
    }
  }
  const double wall_time = WallTimeNow();
  if (jsonl_fd_ >= 0) {
    std::string line =
        absl::StrCat("{\"step\": ", step, ", \"split\": ", nlohmann::json(split).dump(),
                     ", \"wall_time\": ", JsonNumber(wall_time));
    for (const auto& [name, value] : scalars) {
      absl::StrAppend(&line, ", ", nlohmann::json(name).dump(), ": ", JsonNumber(value));
    }
    line += "}\n";
    if (absl::Status s = WriteAll(jsonl_fd_, line, jsonl_path_); !s.ok()) return s;
  }
  if (events_) {
    tensorboard::Event event;
    event.set_wall_time(wall_time);
    event.set_step(step);
    tensorboard::Summary* summary = event.mutable_summary();
    for (const auto& [name, value] : scalars) {
      tensorboard::Summary::Value* v = summary->add_value();
      v->set_tag(absl::StrCat(split, "/", name));
      v->set_simple_value(static_cast<float>(value));
    }
    if (absl::Status s = events_->Write(event.SerializeAsString()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status MetricsLog::Flush() {
  if (jsonl_fd_ >= 0 && ::fsync(jsonl_fd_) != 0) return ErrnoError("cannot fsync", jsonl_path_);
  if (events_) return events_->Flush();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MetricsRecord>> ReadMetricsJsonl(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFileToString(path);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<std::vector<JsonlLine>> lines = ParseJsonl(*contents, path);
  if (!lines.ok()) return lines.status();
  std::vector<MetricsRecord> records;
  records.reserve(lines->size());
  for (JsonlLine& line : *lines) records.push_back(std::move(line.record));
  return records;
}

}  // namespace pmol
