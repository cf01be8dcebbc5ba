// Row-major GEMM on the GPU through cuBLASLt: C[m,n] = alpha * op(A) op(B) + beta * C, and
// with the bias epilogue C[m,n] = op(A) op(B) + bias (bias[n] added to every row, a
// linear layer's forward) in the same kernel.
//
// cuBLASLt is column-major; a row-major [r, c] matrix with leading dimension ld is the
// column-major [c, r] matrix with the same ld, i.e. its transpose. So the row-major
// product is computed as the column-major C^T[n,m] = op(B)^T op(A)^T: cuBLASLt is called
// with the operands swapped (B first), the same transpose flags, and (n, m, k). The bias
// then runs along the rows of the column-major D (length n), which is what
// CUBLASLT_EPILOGUE_BIAS broadcasts over the columns.
//
// Types: f32 (CUBLAS_COMPUTE_32F: full f32 math, no TF32) and f64 (CUBLAS_COMPUTE_64F) with
// C of the same type; bf16 A and B (mixed precision, kernels/backend.h) with f32 compute
// (bf16 products accumulated in f32 on the tensor cores) and C of bf16 (alpha * AB +
// beta * C + bias formed in f32, rounded once) or of f32 (c_dt = AccumDType).
//
// Plans: the first call of a shape asks cuBLASLt's heuristic for its best algorithm for
// those types, transposes, sizes, leading dimensions, operand alignments (the largest
// power of two, up to 256 bytes, dividing each pointer: column slices of a matrix are
// less aligned than whole buffers) and epilogue, and caches the descriptors with it;
// later calls of that shape reuse them (the same algorithm, so the same bits: cuBLASLt is
// deterministic on one stream). The algorithms may use a workspace the backend allocates
// once from its memory pool. Should the heuristic offer nothing, the plain GEMM falls back
// to cublasGemmEx and RowMajorGemmBias returns false, leaving the
// bias to the caller; counters() shows how often either happened.
//
// Compiled by nvcc (gemm.cu) so that host code needs no cuBLAS headers: the handles and
// plans are opaque here.
#ifndef PMOL_KERNELS_CUDA_GEMM_H_
#define PMOL_KERNELS_CUDA_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/cuda/gemm_counters.h"
#include "kernels/dtype.h"

namespace pmol::cuda {

class Blas {
 public:
  // cuBLASLt (and cuBLAS, the fallback) handles whose work goes to `stream`, with
  // `workspace` (device memory valid on that stream, `workspace_bytes` long, owned by the
  // caller and outliving the Blas) for their algorithms; nullptr with *error set on failure.
  static std::unique_ptr<Blas> Create(cudaStream_t stream, void* workspace,
                                      size_t workspace_bytes, std::string* error);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // A and B of dt, C of c_dt, k > 0: dt = c_dt = kF32 or kF64, or dt = kBF16 with c_dt =
  // kBF16 or kF32. f32 is full-precision math: TF32 tensor cores are not enabled, so f32
  // results match the CPU within f32 rounding. Aborts on another combination or a
  // cuBLAS error (a bug: bad leading dimensions).
  void RowMajorGemm(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                    int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                    int64_t ldb, double beta, void* c, int64_t ldc);

  // C[m,n] = op(A) op(B) + bias, all of dt (f32, f64 or bf16), bias packed [n], k > 0,
  // in one cuBLASLt kernel. Returns false, having done nothing, when cuBLASLt offers no
  // algorithm with the bias epilogue for these operands.
  bool RowMajorGemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                        const void* a, int64_t lda, const void* b, int64_t ldb,
                        const void* bias, void* c, int64_t ldc);

  GemmCounters counters() const;

 private:
  struct Handles;  // the handles, the workspace, the plan cache and the counters
  explicit Blas(std::unique_ptr<Handles> handles);
  std::unique_ptr<Handles> handles_;
};

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_GEMM_H_
