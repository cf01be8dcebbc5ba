// The CPU kernels' worker threads. Workers sleep on a condition variable between
// parallel regions instead of spinning (OpenMP's default), so they never steal cycles
// from OpenBLAS's own threads running the GEMMs in between; on a 2-core machine that
// contention cost about a third of a training step.
// Run(parts, fn) calls fn(0..parts-1), part 0 on the calling thread, and returns when
// all parts are done. Regions do not nest: a Run from inside a worker runs inline.
#ifndef PMOL_KERNELS_CPU_THREAD_POOL_H_
#define PMOL_KERNELS_CPU_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pmol::cpu {

class ThreadPool {
 public:
  // The process-wide pool used by the CPU kernels.
  static ThreadPool& Global();

  ~ThreadPool();

  // Total threads including the caller (>= 1).
  void Resize(int threads);
  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  void Run(int parts, const std::function<void(int)>& fn);

 private:
  ThreadPool() = default;
  void Stop();
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 0;
  int64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
};

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_THREAD_POOL_H_
