// Stand-in for the CUDA toolkit's <cublas_v2.h> in the CPU emulation: the calls of
// kernels/cuda/gemm.cu's fallback path (see cublasLt.h), implemented by cublas_lt_on_cpu.cc.
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_CUBLAS_V2_H
#define PMOL_TESTS_CUDA_SIMT_EMULATION_CUBLAS_V2_H

#include <cstddef>
#include <cstdint>

#include "cublasLt.h"

typedef struct EmulatedCublas* cublasHandle_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t* handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream);
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes);
cublasStatus_t cublasGemmEx_64(cublasHandle_t handle, cublasOperation_t transa,
                               cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                               const void* alpha, const void* a, cudaDataType a_type, int64_t lda,
                               const void* b, cudaDataType b_type, int64_t ldb, const void* beta,
                               void* c, cudaDataType c_type, int64_t ldc,
                               cublasComputeType_t compute, cublasGemmAlgo_t algo);

#endif  // PMOL_TESTS_CUDA_SIMT_EMULATION_CUBLAS_V2_H
