// CpuBackend: dispatches each operation on its compute type to the f32 or f64
// instantiation of the kernels in this folder.
#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/column_blocks.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/log_softmax.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router_topk.h"
#include "kernels/cpu/row_softmax.h"
#include "kernels/cpu/thread_pool.h"

namespace pmol {
namespace {

// Alignment of every block Allocate returns, and the size of the header in front of it.
constexpr size_t kAlign = 64;
static_assert(kAlign >= 2 * sizeof(size_t));

// Calls fn(T{}) with T = float or double according to dt.
template <typename Fn>
void Dispatch(DType dt, Fn fn) {
  if (dt == DType::kF32) {
    fn(float{});
  } else if (dt == DType::kF64) {
    fn(double{});
  } else {
    std::fprintf(stderr, "pmol: the CPU backend computes in F32 or F64, not %s\n",
                 DTypeName(dt));
    PMOL_CHECK(false);
  }
}

template <typename T>
T* P(void* p) {
  return static_cast<T*>(p);
}
template <typename T>
const T* P(const void* p) {
  return static_cast<const T*>(p);
}

// The block cache is off under AddressSanitizer (whose checks cover malloc'ed blocks, not
// mmap'ed ones) and with PMOL_HOST_BLOCK_CACHE=0 (for valgrind and other such tools).
bool BlockCacheEnabled() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#else
  const char* env = std::getenv("PMOL_HOST_BLOCK_CACHE");
  return env == nullptr || std::strcmp(env, "0") != 0;
#endif
}

// counter <- max(counter, value).
void RaiseTo(std::atomic<int64_t>& counter, int64_t value) {
  int64_t seen = counter.load(std::memory_order_relaxed);
  while (value > seen &&
         !counter.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

}  // namespace

CpuBackend::CpuBackend(int threads) : block_cache_enabled_(BlockCacheEnabled()) {
  SetThreads(threads);
}

void CpuBackend::SetThreads(int threads) {
  threads_ = threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency());
  if (threads_ < 1) threads_ = 1;
  cpu::ThreadPool::Global().Resize(threads_);
  cpu::SetBlasThreads(threads_);
}

std::string CpuBackend::Name() const { return absl::StrCat("cpu (", threads_, " threads)"); }

// A block is [header of kAlign bytes | the caller's bytes]: the header holds the
// requested size (for Free's accounting) and the block's cache capacity (0: a malloc
// block), and keeps the returned pointer kAlign-aligned.
void* CpuBackend::Allocate(size_t bytes) {
  if (bytes > std::numeric_limits<size_t>::max() / 2) return nullptr;  // no such memory
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  size_t capacity = 0;
  char* block;
  if (block_cache_enabled_ && kAlign + rounded >= cpu::HostBlockCache::kMinBytes) {
    block = static_cast<char*>(block_cache_.Take(kAlign + rounded, &capacity));
  } else {
    block = static_cast<char*>(std::aligned_alloc(kAlign, kAlign + rounded));
  }
  if (block == nullptr) return nullptr;
  std::memcpy(block, &bytes, sizeof(bytes));
  std::memcpy(block + sizeof(bytes), &capacity, sizeof(capacity));
  const int64_t size = static_cast<int64_t>(bytes);
  if (capacity != 0) cached_in_use_bytes_.fetch_add(size, std::memory_order_relaxed);
  RaisePeak(in_use_bytes_.fetch_add(size, std::memory_order_relaxed) + size);
  return block + kAlign;
}
void CpuBackend::Free(void* ptr) {
  if (ptr == nullptr) return;
  char* block = static_cast<char*>(ptr) - kAlign;
  size_t bytes = 0;
  size_t capacity = 0;
  std::memcpy(&bytes, block, sizeof(bytes));
  std::memcpy(&capacity, block + sizeof(bytes), sizeof(capacity));
  in_use_bytes_.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  if (capacity == 0) {
    std::free(block);
    return;
  }
  cached_in_use_bytes_.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  constexpr int64_t kMinCacheLimit = int64_t{64} << 20;
  const int64_t limit =
      std::max(kMinCacheLimit, high_water_bytes_.load(std::memory_order_relaxed));
  block_cache_.Give(block, capacity, static_cast<size_t>(limit));
}

void CpuBackend::ReleaseCachedMemory() { block_cache_.Release(); }

void CpuBackend::RaisePeak(int64_t in_use) {
  RaiseTo(peak_in_use_bytes_, in_use);
  RaiseTo(high_water_bytes_, in_use);
}

MemoryStats CpuBackend::GetMemoryStats() {
  MemoryStats stats;
  stats.in_use_bytes = in_use_bytes_.load(std::memory_order_relaxed);
  stats.peak_in_use_bytes = std::max(peak_in_use_bytes_.load(std::memory_order_relaxed),
                                     stats.in_use_bytes);
  // Live cache blocks count with their capacity, cached ones whole.
  stats.reserved_bytes = stats.in_use_bytes -
                         cached_in_use_bytes_.load(std::memory_order_relaxed) +
                         block_cache_.mapped_bytes();
  return stats;
}

void CpuBackend::ResetPeakMemory() {
  // Store the current count, then raise the peak to whatever an allocation racing with
  // the store has reached, so that peak >= in_use holds afterwards.
  peak_in_use_bytes_.store(in_use_bytes_.load(std::memory_order_relaxed),
                           std::memory_order_relaxed);
  RaisePeak(in_use_bytes_.load(std::memory_order_relaxed));
}

void CpuBackend::CopyFromHost(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
void CpuBackend::CopyOnDevice(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}

void CpuBackend::Fill(DType dt, void* x, double value, int64_t n) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Fill<T>(P<T>(x), static_cast<T>(value), n);
  });
}
void CpuBackend::Axpy(DType dt, double alpha, const void* x, void* y, int64_t n) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Axpy<T>(static_cast<T>(alpha), P<T>(x), P<T>(y), n);
  });
}
void CpuBackend::Scale(DType dt, double alpha, void* x, int64_t n) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Scale<T>(static_cast<T>(alpha), P<T>(x), n);
  });
}
void CpuBackend::AddBias(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AddBias<T>(P<T>(y), P<T>(bias), rows, cols);
  });
}
void CpuBackend::SumRows(DType dt, const void* dy, int64_t rows, int64_t cols, void* dbias) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::SumRows<T>(P<T>(dy), rows, cols, P<T>(dbias));
  });
}
void CpuBackend::ScaleColumnBlocks(DType dt, const void* x, const void* s, int64_t rows,
                                   int64_t blocks, int64_t width, double alpha, void* out) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::ScaleColumnBlocks<T>(P<T>(x), P<T>(s), rows, blocks, width, static_cast<T>(alpha),
                              P<T>(out));
  });
}
void CpuBackend::ColumnBlockDots(DType dt, const void* x, const void* y, int64_t rows,
                                 int64_t blocks, int64_t width, double alpha, void* out) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::ColumnBlockDots<T>(P<T>(x), P<T>(y), rows, blocks, width, static_cast<T>(alpha),
                            P<T>(out));
  });
}
void CpuBackend::CopyRows(DType dt, const void* src, int64_t src_stride, const int32_t* src_rows,
                          void* dst, int64_t dst_stride, const int32_t* dst_rows, int64_t n,
                          int64_t width, bool accumulate) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::CopyRows<T>(P<T>(src), src_stride, src_rows, P<T>(dst), dst_stride, dst_rows, n, width,
                     accumulate);
  });
}
void CpuBackend::Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) {
  cpu::Convert(src_dt, src, dst_dt, dst, n);
}
void CpuBackend::Gemm(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                      double alpha, const void* a, int64_t lda, const void* b, int64_t ldb,
                      double beta, void* c, int64_t ldc) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Gemm<T>(trans_a, trans_b, m, n, k, static_cast<T>(alpha), P<T>(a), lda, P<T>(b), ldb,
                 static_cast<T>(beta), P<T>(c), ldc);
  });
}
void CpuBackend::EmbeddingForward(DType dt, const void* table, const int32_t* ids, int64_t n,
                                  int64_t dim, void* out) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::EmbeddingForward<T>(P<T>(table), ids, n, dim, P<T>(out));
  });
}
void CpuBackend::EmbeddingBackward(DType dt, const void* dout, const int32_t* ids, int64_t n,
                                   int64_t dim, void* dtable) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::EmbeddingBackward<T>(P<T>(dout), ids, n, dim, P<T>(dtable));
  });
}
void CpuBackend::RmsNormForward(DType dt, const void* x, const void* w, double eps, int64_t rows,
                                int64_t dim, void* y, void* inv_rms) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RmsNormForward<T>(P<T>(x), P<T>(w), static_cast<T>(eps), rows, dim, P<T>(y),
                           P<T>(inv_rms));
  });
}
void CpuBackend::RmsNormBackward(DType dt, const void* x, const void* w, const void* inv_rms,
                                 const void* dy, int64_t rows, int64_t dim, void* dx, void* dw) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RmsNormBackward<T>(P<T>(x), P<T>(w), P<T>(inv_rms), P<T>(dy), rows, dim, P<T>(dx),
                            P<T>(dw));
  });
}
void CpuBackend::ApplyRope(DType dt, void* x, int64_t tokens, int64_t heads, int64_t head_dim,
                           const void* cos, const void* sin, const int32_t* positions,
                           bool inverse) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::ApplyRope<T>(P<T>(x), tokens, heads, head_dim, P<T>(cos), P<T>(sin), positions,
                      inverse);
  });
}
void CpuBackend::SwiGluForward(DType dt, const void* gate, const void* up, void* out,
                               int64_t n) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::SwiGluForward<T>(P<T>(gate), P<T>(up), P<T>(out), n);
  });
}
void CpuBackend::SwiGluBackward(DType dt, const void* gate, const void* up, const void* dout,
                                void* dgate, void* dup, int64_t n) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::SwiGluBackward<T>(P<T>(gate), P<T>(up), P<T>(dout), P<T>(dgate), P<T>(dup), n);
  });
}
void CpuBackend::AttentionForward(DType dt, const AttentionShape& shape, const void* q,
                                  const void* k, const void* v, void* out, void* lse) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AttentionForward<T>(shape, P<T>(q), P<T>(k), P<T>(v), P<T>(out), P<T>(lse));
  });
}
void CpuBackend::AttentionBackward(DType dt, const AttentionShape& shape, const void* q,
                                   const void* k, const void* v, const void* out,
                                   const void* lse, const void* dout, void* dq, void* dk,
                                   void* dv) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AttentionBackward<T>(shape, P<T>(q), P<T>(k), P<T>(v), P<T>(out), P<T>(lse),
                              P<T>(dout), P<T>(dq), P<T>(dk), P<T>(dv));
  });
}
void CpuBackend::LogSoftmaxGather(DType dt, const void* logits, const int32_t* targets,
                                  int64_t rows, int64_t vocab, void* logp, void* lse) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::LogSoftmaxGather<T>(P<T>(logits), targets, rows, vocab, P<T>(logp), P<T>(lse));
  });
}
void CpuBackend::LogSoftmaxGatherBackward(DType dt, const void* logits, const int32_t* targets,
                                          const void* lse, const void* dlogp, int64_t rows,
                                          int64_t vocab, void* dlogits) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::LogSoftmaxGatherBackward<T>(P<T>(logits), targets, P<T>(lse), P<T>(dlogp), rows, vocab,
                                     P<T>(dlogits));
  });
}
void CpuBackend::RowSoftmax(DType dt, const void* x, int64_t rows, int64_t cols, double scale,
                            void* y) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RowSoftmax<T>(P<T>(x), rows, cols, static_cast<T>(scale), P<T>(y));
  });
}
void CpuBackend::RowSoftmaxBackward(DType dt, const void* y, const void* dy, int64_t rows,
                                    int64_t cols, double scale, void* dx) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RowSoftmaxBackward<T>(P<T>(y), P<T>(dy), rows, cols, static_cast<T>(scale), P<T>(dx));
  });
}
void CpuBackend::RouterTopK(DType dt, const void* probs, int64_t rows, int64_t slots,
                            int64_t experts, int64_t k, int64_t capacity, void* selected,
                            void* gates, void* top) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RouterTopK<T>(P<T>(probs), rows, slots, experts, k, capacity, P<T>(selected),
                       P<T>(gates), P<T>(top));
  });
}
void CpuBackend::RouterTopKBackward(DType dt, const void* selected, const void* gates,
                                    const void* top, const void* dgates, int64_t rows,
                                    int64_t slots, int64_t experts, void* dg) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RouterTopKBackward<T>(P<T>(selected), P<T>(gates), P<T>(top), P<T>(dgates), rows, slots,
                               experts, P<T>(dg));
  });
}

void CpuBackend::AdamWStep(DType dt, const AdamWScalars& s, void* p, const void* g, void* m,
                           void* v, int64_t n) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AdamWStep<T>(s, P<T>(p), P<T>(g), P<T>(m), P<T>(v), n);
  });
}
void CpuBackend::SumSquares(DType dt, const void* x, int64_t n, void* acc) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    *P<double>(acc) += cpu::SumSquares<T>(P<T>(x), n);
  });
}

}  // namespace pmol
