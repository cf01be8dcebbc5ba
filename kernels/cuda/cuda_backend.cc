// CudaBackend: the Backend of kernels/backend.h on one GPU. It owns the device's stream,
// the cuBLAS handle and a scratch buffer for kernels that need temporary memory, checks
// each call's compute type (f32, f64, and bf16 storage for the ops of the mixed precision
// of kernels/backend.h), and forwards to the launchers of the .cu files (launchers.h) and
// to cuBLAS (gemm.h). The math lives in those files. Memory comes from
// the device's default stream-ordered pool, kept as a cache (release threshold: never),
// and the memory statistics are that pool's counters.
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/backend_factories.h"
#include "kernels/check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launchers.h"
#include "kernels/dtype.h"

namespace pmol {
namespace {

// Minimum compute capability of the kernels this build embeds (sm_90 + compute_90 PTX).
constexpr int kMinMajor = 9;
// The GEMMs' workspace (cuBLASLt's split-K and stream-K algorithms): 32 MiB, NVIDIA's
// recommendation for Hopper.
constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;

// After creation, a failing CUDA call means a bug or a broken device: abort loudly.
void CheckCuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "pmol: %s failed at %s:%d: %s (%s)\n", what, file, line,
                 cudaGetErrorString(err), cudaGetErrorName(err));
    std::abort();
  }
}
#define PMOL_CUDA_OK(expr) CheckCuda((expr), #expr, __FILE__, __LINE__)

[[noreturn]] void UnsupportedType(const char* op, DType dt, const char* supported) {
  std::fprintf(stderr, "pmol: CUDA backend: %s does not support dtype %s (use %s)\n", op,
               std::string(DTypeName(dt)).c_str(), supported);
  std::abort();
}

// Calls fn(T{}) with T = float for kF32 and double for kF64: the ops that never run in
// bf16 (router and optimizer math, kernels/backend.h).
template <typename Fn>
void ForFloatType(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::kF32:
      fn(float{});
      return;
    case DType::kF64:
      fn(double{});
      return;
    default:
      UnsupportedType(op, dt, "F32 or F64");
  }
}

// Calls fn(T{}) with the storage type T = float, double, or Bf16 for kBF16 (mixed
// precision: the launchers compute in cuda::Accum<T>, f32 for Bf16).
template <typename Fn>
void ForStorageType(DType dt, const char* op, Fn&& fn) {
  if (dt == DType::kBF16) return fn(Bf16{});
  if (dt != DType::kF32 && dt != DType::kF64) UnsupportedType(op, dt, "F32, F64 or BF16");
  ForFloatType(dt, op, fn);
}

template <typename T>
const T* In(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* Out(void* p) {
  return static_cast<T*>(p);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::string name, cudaStream_t stream, cudaMemPool_t pool, void* gemm_workspace,
              std::unique_ptr<cuda::Blas> blas)
      : name_(std::move(name)),
        stream_(stream),
        pool_(pool),
        gemm_workspace_(gemm_workspace),
        blas_(std::move(blas)) {}

  ~CudaBackend() override {
    // The process-wide backend is destroyed during static destruction, possibly after
    // the CUDA runtime has begun unloading. Then nothing is released (the driver reclaims
    // it at exit; destroying a cuBLAS handle at that point can crash); otherwise
    // everything is, and errors are ignored rather than fatal.
    const cudaError_t state = cudaStreamSynchronize(stream_);
    if (state == cudaErrorCudartUnloading || state == cudaErrorContextIsDestroyed) {
      (void)blas_.release();  // leaked on purpose
      return;
    }
    if (scratch_ != nullptr) cudaFreeAsync(scratch_, stream_);
    cudaStreamSynchronize(stream_);
    blas_.reset();
    cudaFreeAsync(gemm_workspace_, stream_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
    cudaGetLastError();
  }

  DeviceType device() const override { return DeviceType::kCuda; }
  std::string Name() const override { return name_; }
  cudaStream_t stream() const { return stream_; }

  void* Allocate(size_t bytes) override {
    void* ptr = nullptr;
    cudaError_t err = cudaMallocFromPoolAsync(&ptr, bytes == 0 ? 1 : bytes, pool_, stream_);
    // Out of memory, or a size no device could ever hold: neither error is sticky;
    // clear it so that later launch checks stay clean.
    if (err == cudaErrorMemoryAllocation || err == cudaErrorInvalidValue) {
      cudaGetLastError();
      return nullptr;
    }
    PMOL_CUDA_OK(err);
    return ptr;
  }

  void Free(void* ptr) override {
    if (ptr != nullptr) PMOL_CUDA_OK(cudaFreeAsync(ptr, stream_));
  }

  void CopyFromHost(void* dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return;
    PMOL_CUDA_OK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    // From pageable memory the call returns once the source is staged, so the caller may
    // reuse it at once. From pinned memory the copy is truly asynchronous: wait, so that
    // the same promise holds.
    cudaPointerAttributes attributes;
    if (cudaPointerGetAttributes(&attributes, host_src) == cudaSuccess &&
        attributes.type == cudaMemoryTypeHost) {
      PMOL_CUDA_OK(cudaStreamSynchronize(stream_));
    }
    cudaGetLastError();
  }

  // Blocks until the data is on the host (and so all earlier work is done).
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    PMOL_CUDA_OK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    PMOL_CUDA_OK(cudaStreamSynchronize(stream_));
  }

  void CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0 || dst == src) return;
    PMOL_CUDA_OK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }

  void Synchronize() override { PMOL_CUDA_OK(cudaStreamSynchronize(stream_)); }

  // The pool's own counters: blocks handed out (rounded up by the pool, the scratch
  // buffer included), their high-water mark, and what the pool holds from the driver.
  MemoryStats GetMemoryStats() override {
    MemoryStats stats;
    stats.in_use_bytes = PoolAttribute(cudaMemPoolAttrUsedMemCurrent);
    stats.peak_in_use_bytes = std::max({PoolAttribute(cudaMemPoolAttrUsedMemHigh),
                                        peak_floor_.load(), stats.in_use_bytes});
    stats.reserved_bytes = PoolAttribute(cudaMemPoolAttrReservedMemCurrent);
    return stats;
  }

  // CUDA accepts only 0 for the high-water mark, which then restarts from the next
  // allocation; the use at the reset is kept as the floor of the peak, so that a reset
  // followed only by frees still reports it.
  void ResetPeakMemory() override {
    uint64_t zero = 0;
    PMOL_CUDA_OK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &zero));
    peak_floor_.store(PoolAttribute(cudaMemPoolAttrUsedMemCurrent));
  }

  // Frees complete in stream order: synchronise first, so that every freed block is
  // back in the pool and can be returned.
  void ReleaseCachedMemory() override {
    PMOL_CUDA_OK(cudaStreamSynchronize(stream_));
    PMOL_CUDA_OK(cudaMemPoolTrimTo(pool_, 0));
  }

  void Fill(DType dt, void* x, double value, int64_t n) override {
    switch (dt) {
      case DType::kBF16:
        cuda::LaunchFill<uint16_t>(Out<uint16_t>(x), F32ToBf16(static_cast<float>(value)), n,
                                   stream_);
        return;
      case DType::kF16:
        cuda::LaunchFill<uint16_t>(Out<uint16_t>(x), F32ToF16(static_cast<float>(value)), n,
                                   stream_);
        return;
      case DType::kF32:
        cuda::LaunchFill<float>(Out<float>(x), static_cast<float>(value), n, stream_);
        return;
      case DType::kF64:
        cuda::LaunchFill<double>(Out<double>(x), value, n, stream_);
        return;
      default:
        UnsupportedType("Fill", dt, "F32, F64, BF16 or F16");
    }
  }

  void Axpy(DType dt, double alpha, const void* x, void* y, int64_t n) override {
    ForStorageType(dt, "Axpy", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchAxpy<T>(static_cast<cuda::Accum<T>>(alpha), In<T>(x), Out<T>(y), n, stream_);
    });
  }

  void Scale(DType dt, double alpha, void* x, int64_t n) override {
    ForStorageType(dt, "Scale", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchScale<T>(static_cast<cuda::Accum<T>>(alpha), Out<T>(x), n, stream_);
    });
  }

  void DropoutKeep(DType dt, uint64_t key, double p, int64_t n, void* keep) override {
    switch (dt) {
      case DType::kF32:
        return cuda::LaunchDropoutKeep<float>(key, p, 1.0f, n, Out<float>(keep), stream_);
      case DType::kF64:
        return cuda::LaunchDropoutKeep<double>(key, p, 1.0, n, Out<double>(keep), stream_);
      case DType::kBF16:
        return cuda::LaunchDropoutKeep<uint16_t>(key, p, F64ToBf16(1.0), n, Out<uint16_t>(keep),
                                                 stream_);
      default:
        UnsupportedType("DropoutKeep", dt, "F32, F64 or BF16");
    }
  }

  void AddBias(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) override {
    ForStorageType(dt, "AddBias", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchAddBias<T>(Out<T>(y), In<T>(bias), rows, cols, stream_);
    });
  }

  void SumRows(DType dt, const void* dy, int64_t rows, int64_t cols, void* dbias) override {
    ForStorageType(dt, "SumRows", [&](auto tag) {
      using T = decltype(tag);
      void* scratch = Scratch(cuda::SumRowsScratchBytes(sizeof(cuda::Accum<T>), rows, cols));
      cuda::LaunchSumRows<T>(In<T>(dy), rows, cols, Out<cuda::Accum<T>>(dbias), scratch,
                             stream_);  // dbias is of AccumDType(dt)
    });
  }

  void ScaleColumnBlocks(DType dt, const void* x, const void* s, int64_t rows, int64_t blocks,
                         int64_t width, double alpha, void* out) override {
    ForStorageType(dt, "ScaleColumnBlocks", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchScaleColumnBlocks<T>(In<T>(x), In<T>(s), rows, blocks, width,
                                       static_cast<cuda::Accum<T>>(alpha), Out<T>(out),
                                       stream_);
    });
  }

  void ColumnBlockDots(DType dt, const void* x, const void* y, int64_t rows, int64_t blocks,
                       int64_t width, double alpha, void* out) override {
    ForStorageType(dt, "ColumnBlockDots", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;  // out is of AccumDType(dt)
      cuda::LaunchColumnBlockDots<T>(In<T>(x), In<T>(y), rows, blocks, width,
                                     static_cast<A>(alpha), Out<A>(out), stream_);
    });
  }

  // bf16: one tensor-core kernel where ExpertsMmaApplies. Otherwise the GEMM writes the
  // products in AccumDType (into h or hs when they hold that type, else the scratch
  // buffer), and an epilogue kernel finishes them.
  void ExpertsDown(DType dt, const void* x, const void* a, const void* g, int64_t rows,
                   int64_t k, int64_t blocks, int64_t width, double alpha, void* h,
                   void* hs) override {
    const int64_t cols = blocks * width;
    if (rows <= 0 || cols <= 0) return;
    if (dt == DType::kBF16 && cuda::ExpertsMmaApplies(k, cols, {x, a})) {
      cuda::LaunchExpertsDownMma(In<Bf16>(x), In<Bf16>(a), In<Bf16>(g), rows, k, blocks, width,
                                 static_cast<float>(alpha), Out<Bf16>(h), Out<Bf16>(hs),
                                 stream_);
      return;
    }
    ForStorageType(dt, "ExpertsDown", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;
      void* p = dt != AccumDType(dt) ? Scratch(rows * cols * sizeof(A)) : h != nullptr ? h : hs;
      GemmTo(dt, AccumDType(dt), false, true, rows, cols, k, 1.0, x, k, a, k, 0.0, p, cols);
      cuda::LaunchExpertsDownEpilogue<T>(In<A>(p), In<T>(g), rows, blocks, width,
                                         static_cast<A>(alpha), Out<T>(h), Out<T>(hs), stream_);
    });
  }

  void ExpertsUpBackward(DType dt, const void* dy, const void* b, const void* h, const void* g,
                         int64_t rows, int64_t d, int64_t blocks, int64_t width, double alpha,
                         void* dg, void* dh) override {
    const int64_t cols = blocks * width;
    if (rows <= 0 || cols <= 0) return;
    if (dt == DType::kBF16 && cuda::ExpertsMmaApplies(d, cols, {dy, b})) {
      cuda::LaunchExpertsUpBackwardMma(In<Bf16>(dy), In<Bf16>(b), In<Bf16>(h), In<Bf16>(g),
                                       rows, d, blocks, width, static_cast<float>(alpha),
                                       Out<float>(dg), Out<Bf16>(dh), stream_);
      return;
    }
    ForStorageType(dt, "ExpertsUpBackward", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;
      void* q = dt != AccumDType(dt) ? Scratch(rows * cols * sizeof(A)) : dh;
      GemmTo(dt, AccumDType(dt), false, false, rows, cols, d, 1.0, dy, d, b, cols, 0.0, q, cols);
      cuda::LaunchExpertsUpBackwardEpilogue<T>(In<A>(q), In<T>(h), In<T>(g), rows, blocks, width,
                                               static_cast<A>(alpha), Out<A>(dg), Out<T>(dh),
                                               stream_);
    });
  }

  void CopyRows(DType dt, const void* src, int64_t src_stride, const int32_t* src_rows, void* dst,
                int64_t dst_stride, const int32_t* dst_rows, int64_t n, int64_t width,
                bool accumulate) override {
    ForStorageType(dt, "CopyRows", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchCopyRows<T>(In<T>(src), src_stride, src_rows, Out<T>(dst), dst_stride, dst_rows,
                              n, width, accumulate, stream_);
    });
  }

  void Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) override {
    if (src_dt == DType::kI32 || dst_dt == DType::kI32) {
      std::fprintf(stderr, "pmol: CUDA backend: Convert is for floating types, got %s -> %s\n",
                   std::string(DTypeName(src_dt)).c_str(),
                   std::string(DTypeName(dst_dt)).c_str());
      std::abort();
    }
    if (src_dt == dst_dt) {
      CopyOnDevice(dst, src, static_cast<size_t>(n) * DTypeSize(src_dt));
      return;
    }
    cuda::LaunchConvert(src_dt, src, dst_dt, dst, n, stream_);
  }

  void GemmTo(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
              double alpha, const void* a, int64_t lda, const void* b, int64_t ldb, double beta,
              void* c, int64_t ldc) override {
    if (dt != DType::kF32 && dt != DType::kF64 && dt != DType::kBF16) {
      UnsupportedType("Gemm", dt, "F32, F64 or BF16");
    }
    if (c_dt != dt && c_dt != AccumDType(dt)) {
      std::fprintf(stderr,
                   "pmol: CUDA backend: GemmTo with A and B of %s takes C of %s or %s, not %s\n",
                   DTypeName(dt), DTypeName(dt), DTypeName(AccumDType(dt)), DTypeName(c_dt));
      std::abort();
    }
    if (m <= 0 || n <= 0) return;
    // k = 0: C = beta * C, in the type of C (Fill and Scale of c_dt; cuBLAS would reject
    // the zero leading dimensions).
    if (k <= 0) {
      for (int64_t row = 0; row < m; ++row) {
        void* c_row = static_cast<char*>(c) + row * ldc * static_cast<int64_t>(DTypeSize(c_dt));
        if (beta == 0.0) {
          Fill(c_dt, c_row, 0.0, n);
        } else {
          Scale(c_dt, beta, c_row, n);
        }
      }
      return;
    }
    blas_->RowMajorGemm(dt, c_dt, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                        ldc);
  }

  // One cuBLASLt kernel with the bias epilogue; should cuBLASLt have none for these
  // operands, the GEMM and then AddBias (bf16: rounded twice).
  void GemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                const void* a, int64_t lda, const void* b, int64_t ldb, const void* bias,
                void* c) override {
    if (dt != DType::kF32 && dt != DType::kF64 && dt != DType::kBF16) {
      UnsupportedType("GemmBias", dt, "F32, F64 or BF16");
    }
    if (m <= 0 || n <= 0) return;
    if (k > 0 &&
        blas_->RowMajorGemmBias(dt, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, n)) {
      return;
    }
    GemmTo(dt, dt, trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, n);
    AddBias(dt, c, bias, m, n);
  }

  cuda::GemmCounters gemm_counters() const { return blas_->counters(); }

  void EmbeddingForward(DType dt, const void* table, const int32_t* ids, int64_t n, int64_t dim,
                        void* out) override {
    ForStorageType(dt, "EmbeddingForward", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchEmbeddingForward<T>(In<T>(table), ids, n, dim, Out<T>(out), stream_);
    });
  }

  void EmbeddingBackward(DType dt, DType table_dt, const void* dout, const int32_t* ids,
                         int64_t n, int64_t dim, void* dtable) override {
    PMOL_CHECK(table_dt == dt || table_dt == AccumDType(dt));
    ForStorageType(dt, "EmbeddingBackward", [&](auto tag) {
      using T = decltype(tag);
      void* scratch = Scratch(cuda::EmbeddingBackwardScratchBytes(n));
      if (table_dt == dt) {
        cuda::LaunchEmbeddingBackward<T, T>(In<T>(dout), ids, n, dim, Out<T>(dtable), scratch,
                                            stream_);
      } else {  // bf16 into the f32 weight gradient
        cuda::LaunchEmbeddingBackward<T, cuda::Accum<T>>(In<T>(dout), ids, n, dim,
                                                         Out<cuda::Accum<T>>(dtable), scratch,
                                                         stream_);
      }
    });
  }

  void RmsNormForward(DType dt, const void* x, const void* residual, const void* w, double eps,
                      int64_t rows, int64_t dim, void* sum_out, void* y,
                      void* inv_rms) override {
    ForStorageType(dt, "RmsNormForward", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRmsNormForward<T>(In<T>(x), In<T>(residual), In<T>(w), eps, rows, dim,
                                    Out<T>(sum_out), Out<T>(y), Out<cuda::Accum<T>>(inv_rms),
                                    stream_);
    });
  }

  void RmsNormBackward(DType dt, const void* x, const void* w, const void* inv_rms,
                       const void* dy, const void* residual_grad, int64_t rows, int64_t dim,
                       void* dx, void* dw) override {
    ForStorageType(dt, "RmsNormBackward", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;
      void* scratch = dw == nullptr
                          ? nullptr
                          : Scratch(cuda::RmsNormBackwardScratchBytes(sizeof(A), rows, dim));
      cuda::LaunchRmsNormBackward<T>(In<T>(x), In<T>(w), In<A>(inv_rms), In<T>(dy),
                                     In<T>(residual_grad), rows, dim, Out<T>(dx),
                                     Out<A>(dw), scratch, stream_);  // dw of AccumDType(dt)
    });
  }

  void ApplyRope(DType dt, void* x, int64_t tokens, int64_t heads, int64_t head_dim,
                 const void* cos, const void* sin, const int32_t* positions,
                 bool inverse) override {
    ForStorageType(dt, "ApplyRope", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;  // the tables are of AccumDType(dt)
      cuda::LaunchApplyRope<T>(Out<T>(x), tokens, heads, head_dim, In<A>(cos), In<A>(sin),
                               positions, inverse, stream_);
    });
  }

  void SwiGluForward(DType dt, const void* gate, const void* up, void* out,
                     int64_t n) override {
    ForStorageType(dt, "SwiGluForward", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchSwiGluForward<T>(In<T>(gate), In<T>(up), Out<T>(out), n, stream_);
    });
  }

  void SwiGluBackward(DType dt, const void* gate, const void* up, const void* dout, void* dgate,
                      void* dup, int64_t n) override {
    ForStorageType(dt, "SwiGluBackward", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchSwiGluBackward<T>(In<T>(gate), In<T>(up), In<T>(dout), Out<T>(dgate),
                                    Out<T>(dup), n, stream_);
    });
  }

  void AttentionForward(DType dt, const AttentionShape& shape, const void* q, const void* k,
                        const void* v, void* out, void* lse) override {
    ForStorageType(dt, "AttentionForward", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;
      cuda::LaunchAttentionForward<T>(Dims(shape, sizeof(A)), In<T>(q), In<T>(k), In<T>(v),
                                      Out<T>(out), Out<A>(lse), stream_);
    });
  }

  void AttentionBackward(DType dt, const AttentionShape& shape, const void* q, const void* k,
                         const void* v, const void* out, const void* lse, const void* dout,
                         void* dq, void* dk, void* dv) override {
    ForStorageType(dt, "AttentionBackward", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;
      const cuda::AttentionDims dims = Dims(shape, sizeof(A));
      void* scratch = Scratch(cuda::AttentionBackwardScratchBytes(sizeof(A), dims));
      cuda::LaunchAttentionBackward<T>(dims, In<T>(q), In<T>(k), In<T>(v), In<T>(out),
                                       In<A>(lse), In<T>(dout), Out<T>(dq), Out<T>(dk),
                                       Out<T>(dv), scratch, stream_);
    });
  }

  void LogSoftmaxGather(DType dt, const void* logits, const int32_t* targets, int64_t rows,
                        int64_t vocab, void* logp, void* lse) override {
    ForStorageType(dt, "LogSoftmaxGather", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;  // logp and lse are of AccumDType(dt)
      cuda::LaunchLogSoftmaxGather<T>(In<T>(logits), targets, rows, vocab, Out<A>(logp),
                                      Out<A>(lse), stream_);
    });
  }

  void LogSoftmaxGatherBackward(DType dt, const void* logits, const int32_t* targets,
                                const void* lse, const void* dlogp, int64_t rows, int64_t vocab,
                                void* dlogits) override {
    ForStorageType(dt, "LogSoftmaxGatherBackward", [&](auto tag) {
      using T = decltype(tag);
      using A = cuda::Accum<T>;
      cuda::LaunchLogSoftmaxGatherBackward<T>(In<T>(logits), targets, In<A>(lse), In<A>(dlogp),
                                              rows, vocab, Out<T>(dlogits), stream_);
    });
  }

  void RowSoftmax(DType dt, const void* x, int64_t rows, int64_t cols, double scale,
                  void* y) override {
    ForFloatType(dt, "RowSoftmax", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRowSoftmax<T>(In<T>(x), rows, cols, static_cast<T>(scale), Out<T>(y), stream_);
    });
  }

  void RowSoftmaxBackward(DType dt, const void* y, const void* dy, int64_t rows, int64_t cols,
                          double scale, void* dx) override {
    ForFloatType(dt, "RowSoftmaxBackward", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRowSoftmaxBackward<T>(In<T>(y), In<T>(dy), rows, cols, static_cast<T>(scale),
                                        Out<T>(dx), stream_);
    });
  }

  void RouterTopK(DType dt, const void* probs, int64_t rows, int64_t slots, int64_t experts,
                  int64_t k, int64_t capacity, void* selected, void* gates,
                  void* top) override {
    ForFloatType(dt, "RouterTopK", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRouterTopK<T>(In<T>(probs), rows, slots, experts, k, capacity,
                                Out<T>(selected), Out<T>(gates), Out<T>(top), stream_);
    });
  }

  void RouterTopKBackward(DType dt, const void* selected, const void* gates, const void* top,
                          const void* dgates, int64_t rows, int64_t slots, int64_t experts,
                          void* dg) override {
    ForFloatType(dt, "RouterTopKBackward", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRouterTopKBackward<T>(In<T>(selected), In<T>(gates), In<T>(top), In<T>(dgates),
                                        rows, slots, experts, Out<T>(dg), stream_);
    });
  }

  void RouterGroupLoss(DType dt, const void* probs, const int32_t* labels,
                       const int32_t* expert_group, int64_t rows, int64_t slots, int64_t experts,
                       int64_t groups, double label_smoothing, double grad_scale, void* ce,
                       void* dprobs) override {
    ForFloatType(dt, "RouterGroupLoss", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRouterGroupLoss<T>(In<T>(probs), labels, expert_group, rows, slots, experts,
                                     groups, label_smoothing, grad_scale, Out<T>(ce),
                                     Out<T>(dprobs), stream_);
    });
  }

  void RouterBalanceLoss(DType dt, const void* mass, int64_t mass_stride,
                         const int32_t* expert_group, int64_t count, int64_t slots,
                         int64_t experts, int64_t groups, void* loss, void* dmass) override {
    ForFloatType(dt, "RouterBalanceLoss", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchRouterBalanceLoss<T>(In<T>(mass), mass_stride, expert_group, count, slots,
                                       experts, groups, Out<T>(loss), Out<T>(dmass), stream_);
    });
  }

  void AdamWStep(DType dt, const AdamWScalars& s, void* p, const void* g, void* m, void* v,
                 int64_t n) override {
    const cuda::AdamWLaunchScalars scalars{s.lr,           s.beta1,
                                           s.beta2,        s.eps,
                                           s.weight_decay, s.bias_correction1,
                                           s.bias_correction2};
    ForFloatType(dt, "AdamWStep", [&](auto tag) {
      using T = decltype(tag);
      cuda::LaunchAdamWStep<T>(scalars, Out<T>(p), In<T>(g), Out<T>(m), Out<T>(v), n, stream_);
    });
  }

  void SumSquares(DType dt, const void* x, int64_t n, void* acc) override {
    ForFloatType(dt, "SumSquares", [&](auto tag) {
      using T = decltype(tag);
      void* scratch = Scratch(cuda::SumSquaresScratchBytes(n));
      cuda::LaunchSumSquares<T>(In<T>(x), n, Out<double>(acc), scratch, stream_);
    });
  }

 private:
  // accum_size: the size of the compute type (f32 for bf16 storage).
  static cuda::AttentionDims Dims(const AttentionShape& shape, size_t accum_size) {
    if (shape.kv_heads <= 0 || shape.q_heads % shape.kv_heads != 0 ||
        shape.head_dim > cuda::AttentionMaxHeadDim(accum_size)) {
      std::fprintf(stderr,
                   "pmol: CUDA attention: unsupported shape q_heads=%lld kv_heads=%lld "
                   "head_dim=%lld (q_heads must be a multiple of kv_heads; head_dim <= %lld)\n",
                   static_cast<long long>(shape.q_heads), static_cast<long long>(shape.kv_heads),
                   static_cast<long long>(shape.head_dim),
                   static_cast<long long>(cuda::AttentionMaxHeadDim(accum_size)));
      std::abort();
    }
    return cuda::AttentionDims{shape.batch,    shape.seq,      shape.q_heads,
                               shape.kv_heads, shape.head_dim, shape.scale,
                               shape.key_holes};
  }

  int64_t PoolAttribute(cudaMemPoolAttr attribute) {
    uint64_t value = 0;
    PMOL_CUDA_OK(cudaMemPoolGetAttribute(pool_, attribute, &value));
    return static_cast<int64_t>(value);
  }

  // A device buffer of at least `bytes`, valid for work enqueued on stream_ until the
  // next call. Growing frees the old buffer in stream order (after the work using it).
  void* Scratch(size_t bytes) {
    if (bytes == 0) return nullptr;
    if (bytes > scratch_bytes_) {
      if (scratch_ != nullptr) PMOL_CUDA_OK(cudaFreeAsync(scratch_, stream_));
      scratch_ = nullptr;
      scratch_bytes_ = 0;
      PMOL_CUDA_OK(cudaMallocFromPoolAsync(&scratch_, bytes, pool_, stream_));
      scratch_bytes_ = bytes;
    }
    return scratch_;
  }

  std::string name_;
  cudaStream_t stream_;
  cudaMemPool_t pool_;  // the device's default pool: every Allocate and the scratch buffer
  std::atomic<int64_t> peak_floor_{0};  // pool use at the last ResetPeakMemory()
  void* gemm_workspace_;  // cuBLASLt's and cuBLAS's, kGemmWorkspaceBytes from the pool
  std::unique_ptr<cuda::Blas> blas_;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

absl::Status NoGpu(const std::string& detail) {
  return absl::FailedPreconditionError(
      absl::StrCat("CUDA: no usable GPU found: ", detail,
                   ". Run on a machine with an NVIDIA GPU (compute capability >= ", kMinMajor,
                   ".0) and a driver for CUDA ", CUDART_VERSION / 1000, ", or use --device=cpu"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return NoGpu(absl::StrCat("cudaGetDeviceCount: ", cudaGetErrorString(err), " (",
                              cudaGetErrorName(err), ")"));
  }
  if (count == 0) return NoGpu("the CUDA runtime sees no device (check CUDA_VISIBLE_DEVICES)");
  const int device = 0;
  cudaDeviceProp prop;
  err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return NoGpu(absl::StrCat("cudaGetDeviceProperties: ", cudaGetErrorString(err)));
  }
  if (prop.major < kMinMajor) {
    return NoGpu(absl::StrCat("GPU 0 (", prop.name, ") has compute capability ", prop.major, ".",
                              prop.minor, ", but this build's kernels are for sm_90 and newer"));
  }
  err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return NoGpu(absl::StrCat("cudaSetDevice(0): ", cudaGetErrorString(err)));
  }
  // The caching allocator: the device's default stream-ordered pool, with a release
  // threshold of "never", so that freed blocks stay cached in the pool for reuse instead
  // of going back to the driver at every synchronization.
  cudaMemPool_t pool = nullptr;
  err = cudaDeviceGetDefaultMemPool(&pool, device);
  if (err == cudaSuccess) {
    uint64_t threshold = std::numeric_limits<uint64_t>::max();
    err = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return NoGpu(
        absl::StrCat("the device's stream-ordered memory pool: ", cudaGetErrorString(err)));
  }
  cudaStream_t stream = nullptr;
  err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return NoGpu(absl::StrCat("cudaStreamCreate: ", cudaGetErrorString(err)));
  }
  // The GEMMs' workspace, from the pool (so that it counts in the memory statistics).
  void* gemm_workspace = nullptr;
  err = cudaMallocFromPoolAsync(&gemm_workspace, kGemmWorkspaceBytes, pool, stream);
  if (err != cudaSuccess) {
    cudaGetLastError();
    cudaStreamDestroy(stream);
    return NoGpu(absl::StrCat("allocating the GEMM workspace: ", cudaGetErrorString(err)));
  }
  std::string blas_error;
  std::unique_ptr<cuda::Blas> blas =
      cuda::Blas::Create(stream, gemm_workspace, kGemmWorkspaceBytes, &blas_error);
  if (blas == nullptr) {
    cudaFreeAsync(gemm_workspace, stream);
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    return NoGpu(blas_error);
  }
  std::string name = absl::StrCat("cuda:", device, " (", prop.name, ", sm_", prop.major,
                                  prop.minor, ")");
  return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(
      std::move(name), stream, pool, gemm_workspace, std::move(blas)));
}

namespace {
// GetBackend(kCuda) makes this backend when this file is linked in (backend_factories.h).
[[maybe_unused]] const bool kRegistered = RegisterCudaBackendFactory(&CreateCudaBackend);
}  // namespace

absl::StatusOr<cuda::GemmCounters> CudaBackendGemmCounters(Backend* backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(backend);
  if (cuda == nullptr) return absl::InvalidArgumentError("not a CUDA backend");
  return cuda->gemm_counters();
}

void* CudaBackendStream(Backend* backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(backend);
  return cuda == nullptr ? nullptr : static_cast<void*>(cuda->stream());
}

}  // namespace pmol
