// Row-major GEMM on the CPU through OpenBLAS (cblas): C = alpha*op(A)*op(B) + beta*C.
#ifndef PMOL_KERNELS_CPU_GEMM_H_
#define PMOL_KERNELS_CPU_GEMM_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Sets BLAS's own thread count.
void SetBlasThreads(int threads);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_GEMM_H_
