// CpuBackend: dispatches each operation on its compute type to the f32 or f64
// instantiation of the kernels in this folder. Mixed precision (dt = bf16) runs the f32
// kernels on f32 working copies (widened_operands.h); embedding lookups and CopyRows work
// on the bf16 storage directly (Bf16 of kernels/dtype.h), and EmbeddingBackward widens
// only the rows it adds to (or adds widened rows into an f32 weight gradient).
// RmsNormForward with a residual in bf16 forms the bf16 sum first (Axpy), since the norm
// reads the rounded sum, then normalizes it as above.
#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/column_blocks.h"
#include "kernels/cpu/dropout.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/log_softmax.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/router_losses.h"
#include "kernels/cpu/router_topk.h"
#include "kernels/cpu/row_softmax.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/widened_operands.h"

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

// Elements of attention's q (and out) and of its k (and v).
int64_t QueryElements(const AttentionShape& s) { return s.batch * s.seq * s.q_heads * s.head_dim; }
int64_t KeyValueElements(const AttentionShape& s) { return s.batch * s.seq * s.kv_heads * s.head_dim; }

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
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    Fill(DType::kF32, wide.Out(x, n), value, n);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Fill<T>(P<T>(x), static_cast<T>(value), n);
  });
}
void CpuBackend::Axpy(DType dt, double alpha, const void* x, void* y, int64_t n) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    float* y32 = wide.InOut(y, n);
    Axpy(DType::kF32, alpha, wide.In(x, n), y32, n);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Axpy<T>(static_cast<T>(alpha), P<T>(x), P<T>(y), n);
  });
}
void CpuBackend::Scale(DType dt, double alpha, void* x, int64_t n) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    Scale(DType::kF32, alpha, wide.InOut(x, n), n);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Scale<T>(static_cast<T>(alpha), P<T>(x), n);
  });
}
void CpuBackend::DropoutKeep(DType dt, uint64_t key, double p, int64_t n, void* keep) {
  switch (dt) {
    case DType::kF32:
      return cpu::DropoutKeep<float>(key, p, 1.0f, n, P<float>(keep));
    case DType::kF64:
      return cpu::DropoutKeep<double>(key, p, 1.0, n, P<double>(keep));
    case DType::kBF16:
      return cpu::DropoutKeep<uint16_t>(key, p, F64ToBf16(1.0), n, P<uint16_t>(keep));
    default:
      std::fprintf(stderr, "pmol: the CPU backend's DropoutKeep takes F32, F64 or BF16, not %s\n",
                   DTypeName(dt));
      PMOL_CHECK(false);
  }
}
void CpuBackend::AddBias(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    float* y32 = wide.InOut(y, rows * cols);
    AddBias(DType::kF32, y32, wide.In(bias, cols), rows, cols);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AddBias<T>(P<T>(y), P<T>(bias), rows, cols);
  });
}
void CpuBackend::SumRows(DType dt, const void* dy, int64_t rows, int64_t cols, void* dbias) {
  if (dt == DType::kBF16) {  // dbias is f32 (AccumDType)
    cpu::WidenedOperands wide(this);
    SumRows(DType::kF32, wide.In(dy, rows * cols), rows, cols, dbias);
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::SumRows<T>(P<T>(dy), rows, cols, P<T>(dbias));
  });
}
void CpuBackend::ScaleColumnBlocks(DType dt, const void* x, const void* s, int64_t rows,
                                   int64_t blocks, int64_t width, double alpha, void* out) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* x32 = wide.In(x, rows * blocks * width);
    const float* s32 = wide.In(s, rows * blocks);
    ScaleColumnBlocks(DType::kF32, x32, s32, rows, blocks, width, alpha,
                      wide.Out(out, rows * blocks * width));
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::ScaleColumnBlocks<T>(P<T>(x), P<T>(s), rows, blocks, width, static_cast<T>(alpha),
                              P<T>(out));
  });
}
void CpuBackend::ColumnBlockDots(DType dt, const void* x, const void* y, int64_t rows,
                                 int64_t blocks, int64_t width, double alpha, void* out) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* x32 = wide.In(x, rows * blocks * width);
    ColumnBlockDots(DType::kF32, x32, wide.In(y, rows * blocks * width), rows, blocks, width, alpha,
                    out);  // out is f32 (AccumDType): nothing to write back
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::ColumnBlockDots<T>(P<T>(x), P<T>(y), rows, blocks, width, static_cast<T>(alpha),
                            P<T>(out));
  });
}
// The GEMM into the output (h, else hs) in dt, then the gates' scaling of it: for f32
// and f64 the values of Gemm + ScaleColumnBlocks; bf16 runs that f32 op on widened
// operands and rounds each output once.
void CpuBackend::ExpertsDown(DType dt, const void* x, const void* a, const void* g,
                             int64_t rows, int64_t k, int64_t blocks, int64_t width,
                             double alpha, void* h, void* hs) {
  const int64_t cols = blocks * width;
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* x32 = wide.In(x, rows * k);
    const float* a32 = wide.In(a, cols * k);
    const float* g32 = wide.In(g, rows * blocks);
    float* h32 = wide.Out(h, rows * cols);
    ExpertsDown(DType::kF32, x32, a32, g32, rows, k, blocks, width, alpha, h32,
                wide.Out(hs, rows * cols));
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    T* p = P<T>(h != nullptr ? h : hs);
    cpu::Gemm<T>(false, true, rows, cols, k, T{1}, P<T>(x), k, P<T>(a), k, T{0}, p, cols);
    if (g != nullptr) {
      cpu::ScaleColumnBlocks<T>(p, P<T>(g), rows, blocks, width, static_cast<T>(alpha),
                                P<T>(hs));
      return;
    }
    if (p != hs) std::copy(p, p + rows * cols, P<T>(hs));
    cpu::Scale<T>(static_cast<T>(alpha), P<T>(hs), rows * cols);
  });
}
// The GEMM into dh in dt, the dots from it, then its scaling in place (f32 and f64: the
// values of Gemm + ColumnBlockDots + ScaleColumnBlocks); bf16 as ExpertsDown.
void CpuBackend::ExpertsUpBackward(DType dt, const void* dy, const void* b, const void* h,
                                   const void* g, int64_t rows, int64_t d, int64_t blocks,
                                   int64_t width, double alpha, void* dg, void* dh) {
  const int64_t cols = blocks * width;
  if (dt == DType::kBF16) {  // dg is f32 (AccumDType): written directly
    cpu::WidenedOperands wide(this);
    const float* dy32 = wide.In(dy, rows * d);
    const float* b32 = wide.In(b, d * cols);
    const float* h32 = g != nullptr ? wide.In(h, rows * cols) : nullptr;
    const float* g32 = wide.In(g, rows * blocks);
    ExpertsUpBackward(DType::kF32, dy32, b32, h32, g32, rows, d, blocks, width, alpha, dg,
                      wide.Out(dh, rows * cols));
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    T* q = P<T>(dh);
    cpu::Gemm<T>(false, false, rows, cols, d, T{1}, P<T>(dy), d, P<T>(b), cols, T{0}, q, cols);
    if (g == nullptr) {
      cpu::Scale<T>(static_cast<T>(alpha), q, rows * cols);
      return;
    }
    cpu::ColumnBlockDots<T>(q, P<T>(h), rows, blocks, width, static_cast<T>(alpha), P<T>(dg));
    cpu::ScaleColumnBlocks<T>(q, P<T>(g), rows, blocks, width, static_cast<T>(alpha), q);
  });
}
void CpuBackend::CopyRows(DType dt, const void* src, int64_t src_stride, const int32_t* src_rows,
                          void* dst, int64_t dst_stride, const int32_t* dst_rows, int64_t n,
                          int64_t width, bool accumulate) {
  if (dt == DType::kBF16) {  // bf16 rows as they are, or d += s in f32 rounded once
    cpu::CopyRows<Bf16>(P<Bf16>(src), src_stride, src_rows, P<Bf16>(dst), dst_stride, dst_rows,
                        n, width, accumulate);
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::CopyRows<T>(P<T>(src), src_stride, src_rows, P<T>(dst), dst_stride, dst_rows, n, width,
                     accumulate);
  });
}
void CpuBackend::Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) {
  cpu::Convert(src_dt, src, dst_dt, dst, n);
}
void CpuBackend::GemmTo(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                        int64_t ldb, double beta, void* c, int64_t ldc) {
  if (c_dt != dt && c_dt != AccumDType(dt)) {
    std::fprintf(stderr, "pmol: CPU GemmTo: C of %s with A and B of %s\n", DTypeName(c_dt),
                 DTypeName(dt));
    PMOL_CHECK(false);
  }
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* a32 = wide.In(a, trans_a ? k : m, trans_a ? m : k, lda);
    const float* b32 = wide.In(b, trans_b ? n : k, trans_b ? k : n, ldb);
    float* c32 = c_dt == DType::kF32 ? P<float>(c)
                 : beta != 0.0       ? wide.InOut(c, m, n, ldc)
                                     : wide.Out(c, m, n, ldc);
    cpu::Gemm<float>(trans_a, trans_b, m, n, k, static_cast<float>(alpha), a32, lda, b32, ldb,
                     static_cast<float>(beta), c32, ldc);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::Gemm<T>(trans_a, trans_b, m, n, k, static_cast<T>(alpha), P<T>(a), lda, P<T>(b), ldb,
                 static_cast<T>(beta), P<T>(c), ldc);
  });
}
void CpuBackend::GemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                          const void* a, int64_t lda, const void* b, int64_t ldb,
                          const void* bias, void* c) {
  if (dt == DType::kBF16) {  // the f32 GEMM and bias add, then one rounding
    cpu::WidenedOperands wide(this);
    const float* a32 = wide.In(a, trans_a ? k : m, trans_a ? m : k, lda);
    const float* b32 = wide.In(b, trans_b ? n : k, trans_b ? k : n, ldb);
    float* c32 = wide.Out(c, m * n);
    cpu::Gemm<float>(trans_a, trans_b, m, n, k, 1.0f, a32, lda, b32, ldb, 0.0f, c32, n);
    AddBias(DType::kF32, c32, wide.In(bias, n), m, n);
    wide.WriteBack();
    return;
  }
  Gemm(dt, trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, n);
  AddBias(dt, c, bias, m, n);
}
void CpuBackend::EmbeddingForward(DType dt, const void* table, const int32_t* ids, int64_t n,
                                  int64_t dim, void* out) {
  if (dt == DType::kBF16) {
    cpu::EmbeddingForward<Bf16>(P<Bf16>(table), ids, n, dim, P<Bf16>(out));
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::EmbeddingForward<T>(P<T>(table), ids, n, dim, P<T>(out));
  });
}
void CpuBackend::EmbeddingBackward(DType dt, DType table_dt, const void* dout, const int32_t* ids,
                                   int64_t n, int64_t dim, void* dtable) {
  PMOL_CHECK(table_dt == dt || table_dt == AccumDType(dt));
  if (dt == DType::kBF16 && table_dt == DType::kF32) {  // the f32 weight gradient
    cpu::WidenedOperands wide(this);
    cpu::EmbeddingBackward<float>(wide.In(dout, n * dim), ids, n, dim, P<float>(dtable));
    return;
  }
  if (dt == DType::kBF16) {  // the rows named, summed in f32 and rounded once
    std::vector<int32_t> rows, packed_ids(n);
    std::unordered_map<int32_t, int32_t> packed_row;
    for (int64_t i = 0; i < n; ++i) {
      auto [it, added] = packed_row.emplace(ids[i], static_cast<int32_t>(rows.size()));
      if (added) rows.push_back(ids[i]);
      packed_ids[i] = it->second;
    }
    cpu::WidenedOperands wide(this);
    float* packed = wide.InOutRows(dtable, rows, dim);
    cpu::EmbeddingBackward<float>(wide.In(dout, n * dim), packed_ids.data(), n, dim, packed);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::EmbeddingBackward<T>(P<T>(dout), ids, n, dim, P<T>(dtable));
  });
}
void CpuBackend::RmsNormForward(DType dt, const void* x, const void* residual, const void* w,
                                double eps, int64_t rows, int64_t dim, void* sum_out, void* y,
                                void* inv_rms) {
  PMOL_CHECK(residual == nullptr || sum_out != nullptr);
  if (dt == DType::kBF16) {
    if (residual != nullptr) {  // the bf16 sum (Axpy's), then the norm of it
      if (sum_out != x) CopyOnDevice(sum_out, x, static_cast<size_t>(rows * dim) * sizeof(Bf16));
      Axpy(dt, 1.0, residual, sum_out, rows * dim);
      x = sum_out;
    }
    cpu::WidenedOperands wide(this);
    const float* x32 = wide.In(x, rows * dim);
    const float* w32 = wide.In(w, dim);
    RmsNormForward(DType::kF32, x32, nullptr, w32, eps, rows, dim, nullptr,
                   wide.Out(y, rows * dim), inv_rms);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RmsNormForward<T>(P<T>(x), P<T>(residual), P<T>(w), static_cast<T>(eps), rows, dim,
                           P<T>(sum_out), P<T>(y), P<T>(inv_rms));
  });
}
void CpuBackend::RmsNormBackward(DType dt, const void* x, const void* w, const void* inv_rms,
                                 const void* dy, const void* residual_grad, int64_t rows,
                                 int64_t dim, void* dx, void* dw) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* x32 = wide.In(x, rows * dim);
    const float* w32 = wide.In(w, dim);
    const float* dy32 = wide.In(dy, rows * dim);
    const float* rg32 = wide.In(residual_grad, rows * dim);
    RmsNormBackward(DType::kF32, x32, w32, inv_rms, dy32, rg32, rows, dim,
                    wide.Out(dx, rows * dim), dw);  // dw is f32 (AccumDType)
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RmsNormBackward<T>(P<T>(x), P<T>(w), P<T>(inv_rms), P<T>(dy), P<T>(residual_grad), rows,
                            dim, P<T>(dx), P<T>(dw));
  });
}
void CpuBackend::ApplyRope(DType dt, void* x, int64_t tokens, int64_t heads, int64_t head_dim,
                           const void* cos, const void* sin, const int32_t* positions,
                           bool inverse) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    ApplyRope(DType::kF32, wide.InOut(x, tokens * heads * head_dim), tokens, heads, head_dim, cos,
              sin, positions, inverse);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::ApplyRope<T>(P<T>(x), tokens, heads, head_dim, P<T>(cos), P<T>(sin), positions,
                      inverse);
  });
}
void CpuBackend::SwiGluForward(DType dt, const void* gate, const void* up, void* out,
                               int64_t n) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* gate32 = wide.In(gate, n);
    SwiGluForward(DType::kF32, gate32, wide.In(up, n), wide.Out(out, n), n);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::SwiGluForward<T>(P<T>(gate), P<T>(up), P<T>(out), n);
  });
}
void CpuBackend::SwiGluBackward(DType dt, const void* gate, const void* up, const void* dout,
                                void* dgate, void* dup, int64_t n) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* gate32 = wide.In(gate, n);
    const float* up32 = wide.In(up, n);
    const float* dout32 = wide.In(dout, n);
    float* dgate32 = wide.Out(dgate, n);
    SwiGluBackward(DType::kF32, gate32, up32, dout32, dgate32, wide.Out(dup, n), n);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::SwiGluBackward<T>(P<T>(gate), P<T>(up), P<T>(dout), P<T>(dgate), P<T>(dup), n);
  });
}
void CpuBackend::AttentionForward(DType dt, const AttentionShape& shape, const void* q,
                                  const void* k, const void* v, void* out, void* lse) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const int64_t q_size = QueryElements(shape), kv_size = KeyValueElements(shape);
    const float* q32 = wide.In(q, q_size);
    const float* k32 = wide.In(k, kv_size);
    const float* v32 = wide.In(v, kv_size);
    AttentionForward(DType::kF32, shape, q32, k32, v32, wide.Out(out, q_size), lse);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AttentionForward<T>(shape, P<T>(q), P<T>(k), P<T>(v), P<T>(out), P<T>(lse));
  });
}
void CpuBackend::AttentionBackward(DType dt, const AttentionShape& shape, const void* q,
                                   const void* k, const void* v, const void* out,
                                   const void* lse, const void* dout, void* dq, void* dk,
                                   void* dv) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const int64_t q_size = QueryElements(shape), kv_size = KeyValueElements(shape);
    const float* q32 = wide.In(q, q_size);
    const float* k32 = wide.In(k, kv_size);
    const float* v32 = wide.In(v, kv_size);
    const float* out32 = wide.In(out, q_size);
    const float* dout32 = wide.In(dout, q_size);
    float* dq32 = wide.Out(dq, q_size);
    float* dk32 = wide.Out(dk, kv_size);
    AttentionBackward(DType::kF32, shape, q32, k32, v32, out32, lse, dout32, dq32, dk32,
                      wide.Out(dv, kv_size));
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::AttentionBackward<T>(shape, P<T>(q), P<T>(k), P<T>(v), P<T>(out), P<T>(lse),
                              P<T>(dout), P<T>(dq), P<T>(dk), P<T>(dv));
  });
}
void CpuBackend::LogSoftmaxGather(DType dt, const void* logits, const int32_t* targets,
                                  int64_t rows, int64_t vocab, void* logp, void* lse) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    LogSoftmaxGather(DType::kF32, wide.In(logits, rows * vocab), targets, rows, vocab, logp, lse);
    wide.WriteBack();
    return;
  }
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::LogSoftmaxGather<T>(P<T>(logits), targets, rows, vocab, P<T>(logp), P<T>(lse));
  });
}
void CpuBackend::LogSoftmaxGatherBackward(DType dt, const void* logits, const int32_t* targets,
                                          const void* lse, const void* dlogp, int64_t rows,
                                          int64_t vocab, void* dlogits) {
  if (dt == DType::kBF16) {
    cpu::WidenedOperands wide(this);
    const float* logits32 = wide.In(logits, rows * vocab);
    LogSoftmaxGatherBackward(DType::kF32, logits32, targets, lse, dlogp, rows, vocab,
                             wide.Out(dlogits, rows * vocab));
    wide.WriteBack();
    return;
  }
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
void CpuBackend::RouterGroupLoss(DType dt, const void* probs, const int32_t* labels,
                                 const int32_t* expert_group, int64_t rows, int64_t slots,
                                 int64_t experts, int64_t groups, double label_smoothing,
                                 double grad_scale, void* ce, void* dprobs) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RouterGroupLoss<T>(P<T>(probs), labels, expert_group, rows, slots, experts, groups,
                            label_smoothing, grad_scale, P<T>(ce), P<T>(dprobs));
  });
}
void CpuBackend::RouterBalanceLoss(DType dt, const void* mass, int64_t mass_stride,
                                   const int32_t* expert_group, int64_t count, int64_t slots,
                                   int64_t experts, int64_t groups, void* loss, void* dmass) {
  Dispatch(dt, [&](auto t) {
    using T = decltype(t);
    cpu::RouterBalanceLoss<T>(P<T>(mass), mass_stride, expert_group, count, slots, experts,
                              groups, P<T>(loss), P<T>(dmass));
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
