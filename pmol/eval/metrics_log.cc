// metrics.jsonl reader; see metrics_log.h.
#include "pmol/eval/metrics_log.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"

namespace pmol {
namespace {

absl::StatusOr<MetricsRecord> ParseRecord(const nlohmann::json& j, const std::string& at) {
  auto error = [&](const std::string& field, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(at, ": ", field, ": ", what));
  };
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(at, ": expected a JSON object"));
  MetricsRecord r;
  if (!j.contains("step")) return error("step", "missing");
  if (!j["step"].is_number_integer() || j["step"].get<int64_t>() < 0)
    return error("step", "expected a non-negative integer");
  r.step = j["step"].get<int64_t>();
  if (!j.contains("split")) return error("split", "missing");
  if (!j["split"].is_string()) return error("split", "expected a string (\"train\" or \"eval\")");
  r.split = j["split"].get<std::string>();
  r.wall_time = std::numeric_limits<double>::quiet_NaN();
  for (const auto& [key, value] : j.items()) {
    if (key == "step" || key == "split") continue;
    double v;
    if (value.is_number()) {
      v = value.get<double>();
    } else if (value.is_null()) {
      v = std::numeric_limits<double>::quiet_NaN();
    } else {
      continue;
    }
    if (key == "wall_time") {
      r.wall_time = v;
    } else {
      r.values[key] = v;
    }
  }
  return r;
}

}  // namespace

std::vector<std::pair<int64_t, double>> MetricsLog::Series(const std::string& split,
                                                           const std::string& metric) const {
  std::map<int64_t, double> by_step;
  for (const MetricsRecord& r : records) {
    if (r.split != split) continue;
    auto it = r.values.find(metric);
    if (it != r.values.end()) by_step[r.step] = it->second;
  }
  return {by_step.begin(), by_step.end()};
}

const MetricsRecord* MetricsLog::Last(const std::string& split) const {
  for (auto it = records.rbegin(); it != records.rend(); ++it)
    if (it->split == split) return &*it;
  return nullptr;
}

absl::StatusOr<MetricsLog> ParseMetricsLog(const std::string& text, const std::string& where) {
  MetricsLog log;
  size_t begin = 0;
  for (int64_t line = 1; begin < text.size(); ++line) {
    size_t end = text.find('\n', begin);
    const bool has_newline = end != std::string::npos;
    if (!has_newline) end = text.size();
    const std::string content = text.substr(begin, end - begin);
    begin = end + 1;
    if (content.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = absl::StrCat(where, ":", line);
    const nlohmann::json j = nlohmann::json::parse(content, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      if (!has_newline) {  // the torn last line of an interrupted write
        log.torn_lines = 1;
        break;
      }
      return absl::InvalidArgumentError(absl::StrCat(at, ": not valid JSON"));
    }
    PMOL_ASSIGN_OR_RETURN(MetricsRecord record, ParseRecord(j, at));
    log.records.push_back(std::move(record));
  }
  return log;
}

absl::StatusOr<MetricsLog> ReadMetricsLog(const std::string& path) {
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseMetricsLog(text, path);
}

}  // namespace pmol
