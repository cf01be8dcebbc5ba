// A small blocking thread pool for the CPU kernels; see thread_pool.h.
#include "kernels/cpu/thread_pool.h"

namespace pmol::cpu {
namespace {

thread_local bool in_worker = false;

}  // namespace

ThreadPool& ThreadPool::Global() {
  static ThreadPool* pool = new ThreadPool();  // never destroyed: workers outlive statics
  return *pool;
}

ThreadPool::~ThreadPool() { Stop(); }

void ThreadPool::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  stopping_ = false;
  generation_ = 0;  // new workers start with seen = 0; they must not see an old job
}

void ThreadPool::Resize(int threads) {
  if (threads < 1) threads = 1;
  if (threads == this->threads()) return;
  Stop();
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

void ThreadPool::WorkerLoop(int index) {
  in_worker = true;
  int64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      job = job_;
      if (index >= parts_) continue;
    }
    (*job)(index);
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

void ThreadPool::Run(int parts, const std::function<void(int)>& fn) {
  if (parts <= 1 || workers_.empty() || in_worker) {
    for (int p = 0; p < parts; ++p) fn(p);
    return;
  }
  if (parts > threads()) parts = threads();
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    parts_ = parts;
    pending_ = parts - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  fn(0);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  job_ = nullptr;
}

}  // namespace pmol::cpu
