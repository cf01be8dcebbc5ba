// Multithreading for the CPU kernels: OpenMP parallel loops over independent rows.
// The thread count is set once per backend (CpuBackend) and applies to BLAS too.
#ifndef PMOL_KERNELS_CPU_PARALLEL_H_
#define PMOL_KERNELS_CPU_PARALLEL_H_

#include <cstdint>

#include <omp.h>

namespace pmol::cpu {

// Runs fn(begin, end) over [0, n) split into contiguous chunks, one per thread; runs
// inline when the work (n * cost_per_item) is too small to pay for a fork.
template <typename Fn>
void ParallelFor(int64_t n, int64_t cost_per_item, Fn fn) {
  constexpr int64_t kMinWorkPerThread = 1 << 15;
  int threads = omp_get_max_threads();
  int64_t useful = (n * cost_per_item) / kMinWorkPerThread;
  if (useful < threads) threads = static_cast<int>(useful < 1 ? 1 : useful);
  if (threads > n) threads = static_cast<int>(n < 1 ? 1 : n);
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num();
    int64_t begin = n * t / threads;
    int64_t end = n * (t + 1) / threads;
    if (begin < end) fn(begin, end);
  }
}

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_PARALLEL_H_
