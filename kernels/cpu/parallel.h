// Multithreading for the CPU kernels: loops over independent rows split into contiguous
// chunks, one per thread of the kernels' pool (thread_pool.h). The thread count is set
// once per backend (CpuBackend) and applies to BLAS too.
#ifndef PMOL_KERNELS_CPU_PARALLEL_H_
#define PMOL_KERNELS_CPU_PARALLEL_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace pmol::cpu {

// Runs fn(begin, end) over [0, n) split into contiguous chunks, one per thread; runs
// inline when the work (n * cost_per_item) is too small to pay for waking threads.
template <typename Fn>
void ParallelFor(int64_t n, int64_t cost_per_item, Fn fn) {
  constexpr int64_t kMinWorkPerThread = 1 << 15;
  ThreadPool& pool = ThreadPool::Global();
  int64_t threads = pool.threads();
  const int64_t useful = (n * cost_per_item) / kMinWorkPerThread;
  if (useful < threads) threads = useful < 1 ? 1 : useful;
  if (threads > n) threads = n < 1 ? 1 : n;
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  pool.Run(static_cast<int>(threads), [&](int t) {
    const int64_t begin = n * t / threads;
    const int64_t end = n * (t + 1) / threads;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_PARALLEL_H_
