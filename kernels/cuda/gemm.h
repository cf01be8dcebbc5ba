// Row-major GEMM on the GPU through cuBLAS: C[m,n] = alpha * op(A) op(B) + beta * C.
// cuBLAS is column-major; a row-major [r, c] matrix with leading dimension ld is the
// column-major [c, r] matrix with the same ld, i.e. its transpose. So the row-major
// product is computed as the column-major C^T[n,m] = op(B)^T op(A)^T: cuBLAS is called
// with the operands swapped (B first), the same transpose flags, and (n, m, k).
//
// Types: f32 (cublasSgemm) and f64 (cublasDgemm) with C of the same type; bf16 A and B
// (mixed precision, kernels/backend.h) through cublasGemmEx with f32 compute
// (CUBLAS_COMPUTE_32F: bf16 products accumulated in f32, tensor cores allowed) and C of bf16
// (alpha * AB + beta * C formed in f32, rounded once) or of f32 (c_dt = AccumDType).
//
// Compiled by nvcc (gemm.cu) so that host code needs no cuBLAS headers: the handle is
// opaque here.
#ifndef PMOL_KERNELS_CUDA_GEMM_H_
#define PMOL_KERNELS_CUDA_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/dtype.h"

namespace pmol::cuda {

class Blas {
 public:
  // A cuBLAS handle whose work goes to `stream`; nullptr with *error set on failure.
  static std::unique_ptr<Blas> Create(cudaStream_t stream, std::string* error);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // A and B of dt, C of c_dt, k > 0: dt = c_dt = kF32 (cublasSgemm) or kF64
  // (cublasDgemm), or dt = kBF16 with c_dt = kBF16 or kF32 (cublasGemmEx, f32 compute).
  // f32 is full-precision math: TF32 tensor cores are not enabled (CUBLAS_DEFAULT_MATH),
  // so f32 results match the CPU within f32 rounding. Aborts on another combination or a
  // cuBLAS error (a bug: bad leading dimensions).
  void RowMajorGemm(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                    int64_t ldb, double beta, void* c, int64_t ldc);

 private:
  explicit Blas(void* handle) : handle_(handle) {}
  void* handle_;  // cublasHandle_t
};

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_GEMM_H_
