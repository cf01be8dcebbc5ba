// The progress line; see progress.h.
#include "pmol/train/progress.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pmol {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string FormatBytes(double bytes) {
  if (!std::isfinite(bytes) || bytes < 0) return "?";
  constexpr double kKiB = 1024.0, kMiB = kKiB * 1024, kGiB = kMiB * 1024;
  if (bytes < kKiB) return absl::StrFormat("%.0f B", bytes);
  if (bytes < kMiB) return absl::StrFormat("%.2f KiB", bytes / kKiB);
  if (bytes < kGiB) return absl::StrFormat("%.2f MiB", bytes / kMiB);
  return absl::StrFormat("%.2f GiB", bytes / kGiB);
}

std::string ProgressLine(const ProgressFigures& f) {
  auto get = [&](const char* name, double* value) {
    auto it = f.metrics.find(name);
    if (it == f.metrics.end()) return false;
    *value = it->second;
    return true;
  };
  std::string line = absl::StrFormat("step %d/%d (%d%%) | epoch %.2f", f.step, f.total_steps,
                                     f.total_steps > 0 ? 100 * f.step / f.total_steps : 0, f.epoch);
  double v = 0;
  if (get("loss/total", &v)) absl::StrAppendFormat(&line, " | loss %.4f", v);
  for (const char* part : {"dpo", "sft", "reward", "group", "balance"}) {
    if (get(absl::StrCat("loss/", part).c_str(), &v) &&
        (v != 0 || std::string(part) == "dpo" || std::string(part) == "sft")) {
      absl::StrAppendFormat(&line, " %s %.4f", std::string(part) == "balance" ? "bal" : part, v);
    }
  }
  double margin = 0;
  if (get("rewards/accuracy", &v)) {
    absl::StrAppendFormat(&line, " | acc %.2f", v);
    if (get("rewards/margins", &margin)) absl::StrAppendFormat(&line, " margin %.3f", margin);
  }
  absl::StrAppendFormat(&line, " | lr %.1e | gnorm %.3g | %.0f tok/s", f.lr, f.grad_norm,
                        f.tokens_per_second);
  if (f.peak_memory_bytes >= 0) absl::StrAppend(&line, " | mem ", FormatBytes(f.peak_memory_bytes));
  absl::StrAppendFormat(&line, " | elapsed %s | ETA %s", FormatDuration(f.elapsed_seconds),
                        FormatDuration(f.eta_seconds));
  return line;
}

}  // namespace pmol
