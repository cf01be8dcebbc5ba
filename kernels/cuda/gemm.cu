// Row-major GEMM through cuBLAS (see gemm.h for the column-major swap).
#include <cublas_v2.h>

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/gemm.h"

namespace pmol::cuda {
namespace {

void CheckCublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "pmol: %s failed: %s\n", what, cublasGetStatusString(status));
    std::abort();
  }
}

}  // namespace

std::unique_ptr<Blas> Blas::Create(cudaStream_t stream, std::string* error) {
  cublasHandle_t handle = nullptr;
  cublasStatus_t status = cublasCreate(&handle);
  if (status != CUBLAS_STATUS_SUCCESS) {
    *error = std::string("cublasCreate: ") + cublasGetStatusString(status);
    return nullptr;
  }
  status = cublasSetStream(handle, stream);
  if (status != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle);
    *error = std::string("cublasSetStream: ") + cublasGetStatusString(status);
    return nullptr;
  }
  return std::unique_ptr<Blas>(new Blas(handle));
}

Blas::~Blas() { cublasDestroy(static_cast<cublasHandle_t>(handle_)); }

void Blas::RowMajorGemm(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                        int64_t ldb, double beta, void* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  cublasHandle_t handle = static_cast<cublasHandle_t>(handle_);
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (dt == DType::kBF16 && (c_dt == DType::kBF16 || c_dt == DType::kF32)) {
    const float alpha_f = static_cast<float>(alpha);
    const float beta_f = static_cast<float>(beta);
    CheckCublas(cublasGemmEx_64(handle, op_b, op_a, n, m, k, &alpha_f, b, CUDA_R_16BF, ldb, a,
                                CUDA_R_16BF, lda, &beta_f, c,
                                c_dt == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, ldc,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                "cublasGemmEx");
  } else if (c_dt != dt) {
    std::fprintf(stderr, "pmol: CUDA Gemm: C of %s with A and B of %s\n",
                 std::string(DTypeName(c_dt)).c_str(), std::string(DTypeName(dt)).c_str());
    std::abort();
  } else if (dt == DType::kF32) {
    const float alpha_f = static_cast<float>(alpha);
    const float beta_f = static_cast<float>(beta);
    CheckCublas(cublasSgemm_64(handle, op_b, op_a, n, m, k, &alpha_f,
                               static_cast<const float*>(b), ldb, static_cast<const float*>(a),
                               lda, &beta_f, static_cast<float*>(c), ldc),
                "cublasSgemm");
  } else if (dt == DType::kF64) {
    CheckCublas(cublasDgemm_64(handle, op_b, op_a, n, m, k, &alpha,
                               static_cast<const double*>(b), ldb,
                               static_cast<const double*>(a), lda, &beta,
                               static_cast<double*>(c), ldc),
                "cublasDgemm");
  } else {
    std::fprintf(stderr, "pmol: CUDA Gemm supports f32, f64 and bf16, not %s\n",
                 std::string(DTypeName(dt)).c_str());
    std::abort();
  }
}

}  // namespace pmol::cuda
