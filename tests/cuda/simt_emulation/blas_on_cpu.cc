// cuBLASLt is not emulated: the emulated CUDA backend's GEMMs (kernels/cuda/gemm.h's Blas)
// run on the CPU backend's GemmTo and GemmBias. The emulated backend test therefore skips
// its GEMM comparisons, which would compare the CPU with itself.
#include <memory>
#include <string>

#include "kernels/backend.h"
#include "kernels/cuda/gemm.h"

namespace pmol::cuda {

struct Blas::Handles {
  GemmCounters counters;
};

std::unique_ptr<Blas> Blas::Create(cudaStream_t /*stream*/, void* /*workspace*/,
                                   size_t /*workspace_bytes*/, std::string* /*error*/) {
  return std::unique_ptr<Blas>(new Blas(std::make_unique<Handles>()));
}

Blas::Blas(std::unique_ptr<Handles> handles) : handles_(std::move(handles)) {}

Blas::~Blas() = default;

void Blas::RowMajorGemm(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                        int64_t ldb, double beta, void* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  ++handles_->counters.lt_calls;
  GetBackend(DeviceType::kCpu).value()->GemmTo(dt, c_dt, trans_a, trans_b, m, n, k, alpha, a,
                                               lda, b, ldb, beta, c, ldc);
}

bool Blas::RowMajorGemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                            int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
                            const void* bias, void* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0 || ldc != n) return false;
  ++handles_->counters.lt_calls;
  ++handles_->counters.lt_bias_calls;
  GetBackend(DeviceType::kCpu).value()->GemmBias(dt, trans_a, trans_b, m, n, k, a, lda, b, ldb,
                                                 bias, c);
  return true;
}

GemmCounters Blas::counters() const { return handles_->counters; }

}  // namespace pmol::cuda
