// The CPU implementation of Backend: host memory (64-byte aligned), OpenBLAS GEMMs and
// the multithreaded kernels of this folder, in f32 or f64 (f64 serves the oracle tests).
// Memory: a block of at least HostBlockCache::kMinBytes comes from the block cache
// (host_block_cache.h), which keeps freed blocks for reuse; smaller ones from malloc.
// Every block carries its requested size (and its cache capacity, 0 for malloc) in a
// 64-byte header in front of it, so that in_use counts exactly the bytes requested and
// not yet freed. The cache keeps at most max(64 MiB, the highest in_use so far) bytes
// of freed blocks, so a step that allocates what the previous one freed maps no new
// memory. reserved = in_use + the cache's capacity slack and cached blocks (small blocks
// count as requested); ReleaseCachedMemory unmaps the cached blocks. The counters are
// atomics (Allocate and Free may run on several threads at once).
// PMOL_HOST_BLOCK_CACHE=0 (read when the backend is made) turns the cache off, so that
// every block comes from malloc, as memory checkers expect; builds with AddressSanitizer
// turn it off by themselves.
#ifndef PMOL_KERNELS_CPU_CPU_BACKEND_H_
#define PMOL_KERNELS_CPU_CPU_BACKEND_H_

#include <atomic>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/host_block_cache.h"

namespace pmol {

class CpuBackend : public Backend {
 public:
  // threads <= 0: all cores the process may use.
  explicit CpuBackend(int threads);

  void SetThreads(int threads);
  int threads() const { return threads_; }

  DeviceType device() const override { return DeviceType::kCpu; }
  std::string Name() const override;

  void* Allocate(size_t bytes) override;
  void Free(void* ptr) override;
  void CopyFromHost(void* dst, const void* host_src, size_t bytes) override;
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  void CopyOnDevice(void* dst, const void* src, size_t bytes) override;
  void Synchronize() override {}
  MemoryStats GetMemoryStats() override;
  void ResetPeakMemory() override;
  void ReleaseCachedMemory() override;

  void Fill(DType dt, void* x, double value, int64_t n) override;
  void Axpy(DType dt, double alpha, const void* x, void* y, int64_t n) override;
  void Scale(DType dt, double alpha, void* x, int64_t n) override;
  void DropoutKeep(DType dt, uint64_t key, double p, int64_t n, void* keep) override;
  void AddBias(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) override;
  void SumRows(DType dt, const void* dy, int64_t rows, int64_t cols, void* dbias) override;
  void ScaleColumnBlocks(DType dt, const void* x, const void* s, int64_t rows, int64_t blocks,
                         int64_t width, double alpha, void* out) override;
  void ColumnBlockDots(DType dt, const void* x, const void* y, int64_t rows, int64_t blocks,
                       int64_t width, double alpha, void* out) override;
  void ExpertsDown(DType dt, const void* x, const void* a, const void* g, int64_t rows,
                   int64_t k, int64_t blocks, int64_t width, double alpha, void* h,
                   void* hs) override;
  void ExpertsUpBackward(DType dt, const void* dy, const void* b, const void* h, const void* g,
                         int64_t rows, int64_t d, int64_t blocks, int64_t width, double alpha,
                         void* dg, void* dh) override;
  void CopyRows(DType dt, const void* src, int64_t src_stride, const int32_t* src_rows, void* dst,
                int64_t dst_stride, const int32_t* dst_rows, int64_t n, int64_t width,
                bool accumulate) override;
  void Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) override;
  void GemmTo(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
              double alpha, const void* a, int64_t lda, const void* b, int64_t ldb, double beta,
              void* c, int64_t ldc) override;
  void GemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                const void* a, int64_t lda, const void* b, int64_t ldb, const void* bias,
                void* c) override;
  void EmbeddingForward(DType dt, const void* table, const int32_t* ids, int64_t n, int64_t dim,
                        void* out) override;
  void EmbeddingBackward(DType dt, DType table_dt, const void* dout, const int32_t* ids, int64_t n,
                         int64_t dim, void* dtable) override;
  void RmsNormForward(DType dt, const void* x, const void* residual, const void* w, double eps,
                      int64_t rows, int64_t dim, void* sum_out, void* y, void* inv_rms) override;
  void RmsNormBackward(DType dt, const void* x, const void* w, const void* inv_rms,
                       const void* dy, const void* residual_grad, int64_t rows, int64_t dim,
                       void* dx, void* dw) override;
  void ApplyRope(DType dt, void* x, int64_t tokens, int64_t heads, int64_t head_dim,
                 const void* cos, const void* sin, const int32_t* positions,
                 bool inverse) override;
  void SwiGluForward(DType dt, const void* gate, const void* up, void* out, int64_t n) override;
  void SwiGluBackward(DType dt, const void* gate, const void* up, const void* dout, void* dgate,
                      void* dup, int64_t n) override;
  void AttentionForward(DType dt, const AttentionShape& shape, const void* q, const void* k,
                        const void* v, void* out, void* lse) override;
  void AttentionBackward(DType dt, const AttentionShape& shape, const void* q, const void* k,
                         const void* v, const void* out, const void* lse, const void* dout,
                         void* dq, void* dk, void* dv) override;
  void LogSoftmaxGather(DType dt, const void* logits, const int32_t* targets, int64_t rows,
                        int64_t vocab, void* logp, void* lse) override;
  void LogSoftmaxGatherBackward(DType dt, const void* logits, const int32_t* targets,
                                const void* lse, const void* dlogp, int64_t rows, int64_t vocab,
                                void* dlogits) override;
  void RowSoftmax(DType dt, const void* x, int64_t rows, int64_t cols, double scale,
                  void* y) override;
  void RowSoftmaxBackward(DType dt, const void* y, const void* dy, int64_t rows, int64_t cols,
                          double scale, void* dx) override;
  void RouterTopK(DType dt, const void* probs, int64_t rows, int64_t slots, int64_t experts,
                  int64_t k, int64_t capacity, void* selected, void* gates,
                  void* top) override;
  void RouterTopKBackward(DType dt, const void* selected, const void* gates, const void* top,
                          const void* dgates, int64_t rows, int64_t slots, int64_t experts,
                          void* dg) override;
  void RouterGroupLoss(DType dt, const void* probs, const int32_t* labels,
                       const int32_t* expert_group, int64_t rows, int64_t slots, int64_t experts,
                       int64_t groups, double label_smoothing, double grad_scale, void* ce,
                       void* dprobs) override;
  void RouterBalanceLoss(DType dt, const void* mass, int64_t mass_stride,
                         const int32_t* expert_group, int64_t count, int64_t slots,
                         int64_t experts, int64_t groups, void* loss, void* dmass) override;
  void AdamWStep(DType dt, const AdamWScalars& s, void* p, const void* g, void* m, void* v,
                 int64_t n) override;
  void SumSquares(DType dt, const void* x, int64_t n, void* acc) override;

 private:
  void RaisePeak(int64_t in_use);  // peak <- max(peak, in_use)

  int threads_ = 1;
  const bool block_cache_enabled_;
  std::atomic<int64_t> in_use_bytes_{0};
  std::atomic<int64_t> peak_in_use_bytes_{0};
  std::atomic<int64_t> high_water_bytes_{0};     // max of in_use over the process's life
  std::atomic<int64_t> cached_in_use_bytes_{0};  // requested bytes of live cache blocks
  cpu::HostBlockCache block_cache_;
};

}  // namespace pmol

#endif  // PMOL_KERNELS_CPU_CPU_BACKEND_H_
