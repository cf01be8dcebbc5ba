// This process's memory as Linux reports it, for the benchmarks' peak-memory figures:
// fields of /proc/self/status in KiB ("VmRSS" now, "VmHWM" the peak resident set), and
// resetting the peak to the current RSS (/proc/self/clear_refs "5") so that a peak can be
// taken over one phase.
#ifndef PMOL_BENCHMARKS_PROCESS_MEMORY_H_
#define PMOL_BENCHMARKS_PROCESS_MEMORY_H_

#include <string>

namespace pmol {

// KiB of `key` in /proc/self/status; -1 if unreadable.
double ProcStatusKb(const std::string& key);

// Resets VmHWM to the current RSS; false where the kernel does not allow it.
bool ResetPeakRss();

}  // namespace pmol

#endif  // PMOL_BENCHMARKS_PROCESS_MEMORY_H_
