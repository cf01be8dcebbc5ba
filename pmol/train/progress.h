// The progress line of `pmol train` (rank 0), one line per logged step so that it reads
// the same on a terminal and in a log file (Slurm output):
//   step 120/600 (20%) | epoch 0.40 | loss 0.6421 dpo 0.6389 group 0.0251 bal 1.0050 |
//   acc 0.62 margin 0.153 | lr 1.9e-04 | gnorm 0.84 | 2310 tok/s | mem 1.23 GiB |
//   elapsed 1m02s | ETA 4m08s
// Throughput is over the steps since the previous line; the ETA extrapolates the
// average step time since the start (or the resumption) of the run; mem is the peak of
// the backend's device memory in use during those steps (the largest over the ranks).
#ifndef PMOL_TRAIN_PROGRESS_H_
#define PMOL_TRAIN_PROGRESS_H_

#include <cstdint>
#include <map>
#include <string>

namespace pmol {

// "4m08s", "1h02m", "12s".
std::string FormatDuration(double seconds);

// Binary units: "512 B", "3.00 KiB", "812.25 MiB", "1.23 GiB".
std::string FormatBytes(double bytes);

struct ProgressFigures {
  int64_t step = 0, total_steps = 0;
  double epoch = 0;
  std::map<std::string, double> metrics;  // StepMetrics::Named of the logged steps
  double lr = 0, grad_norm = 0;
  double tokens_per_second = 0;
  double peak_memory_bytes = -1;  // < 0: unknown, not shown
  double elapsed_seconds = 0, eta_seconds = 0;
};

std::string ProgressLine(const ProgressFigures& f);

}  // namespace pmol

#endif  // PMOL_TRAIN_PROGRESS_H_
