// cuBLASLt and cuBLAS on the CPU for the emulated CUDA backend (cublasLt.h, cublas_v2.h),
// written from the documented semantics, independently of kernels/cuda/gemm.cu's row-major
// mapping, so that running gemm.cu against it checks that mapping:
//   column-major matrices: element (i, j) of a layout (rows, cols, ld) at i + j * ld,
//   ld >= rows; op(X) = X or X^T by the descriptor's TRANSA / TRANSB;
//   D[m, n] = alpha * op(A)[m, k] op(B)[k, n] + beta * C (C not read when beta = 0)
//             + bias[i] on row i with CUBLASLT_EPILOGUE_BIAS (bias of D's type);
//   products accumulated in the compute type (f32 for COMPUTE_32F, f64 for COMPUTE_64F),
//   in k order, each D element rounded once to D's type (bf16: nearest even).
// Type combinations: the ones cuBLASLt documents for these compute types (bf16 A and B
// with C = D of bf16 or f32; all f32; all f64); others are NOT_SUPPORTED. Where the real
// library's offer depends on the GPU, the stand-in takes a side, so that gemm.cu's
// fallbacks run too: it has no f64 bias-epilogue algorithm (gemm.cu then adds the bias
// itself). An algorithm remembers the alignments it was chosen for (the MIN_ALIGNMENT
// preferences, the bias pointer's); cublasLtMatmul refuses (INVALID_VALUE) pointers less
// aligned than that, as the real kernels would fault or read wrongly.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "cublasLt.h"
#include "cublas_v2.h"
#include "kernels/dtype.h"

struct EmulatedLt {};
struct EmulatedCublas {};

struct EmulatedLtDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};

struct EmulatedLtLayout {
  cudaDataType_t type;
  int64_t rows, cols, ld;
};

struct EmulatedLtPreference {
  uint64_t max_workspace = 0;
  uint32_t align_a = 256, align_b = 256, align_c = 256, align_d = 256;
};

namespace {

uint32_t AlignmentOf(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment >>= 1;
  return alignment;
}

template <typename T>
cublasStatus_t Set(T* field, const void* buf, size_t size) {
  if (size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(field, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

bool TypesSupported(cublasComputeType_t compute, cudaDataType_t scale, cudaDataType_t ab,
                    cudaDataType_t cd) {
  if (compute == CUBLAS_COMPUTE_32F && scale == CUDA_R_32F) {
    return (ab == CUDA_R_16BF && (cd == CUDA_R_16BF || cd == CUDA_R_32F)) ||
           (ab == CUDA_R_32F && cd == CUDA_R_32F);
  }
  return compute == CUBLAS_COMPUTE_64F && scale == CUDA_R_64F && ab == CUDA_R_64F &&
         cd == CUDA_R_64F;
}

double Load(cudaDataType_t type, const void* p, int64_t index) {
  switch (type) {
    case CUDA_R_16BF:
      return pmol::Bf16ToF32(static_cast<const uint16_t*>(p)[index]);
    case CUDA_R_32F:
      return static_cast<const float*>(p)[index];
    default:
      return static_cast<const double*>(p)[index];
  }
}

void Store(cudaDataType_t type, void* p, int64_t index, double value) {
  switch (type) {
    case CUDA_R_16BF:  // value is an f32 result here: one rounding
      static_cast<uint16_t*>(p)[index] = pmol::F32ToBf16(static_cast<float>(value));
      break;
    case CUDA_R_32F:
      static_cast<float*>(p)[index] = static_cast<float>(value);
      break;
    default:
      static_cast<double*>(p)[index] = value;
  }
}

// One column-major GEMM of already validated shapes; Acc is the compute type.
template <typename Acc>
void Compute(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, Acc alpha,
             const void* a, cudaDataType_t ab_type, int64_t lda, const void* b, int64_t ldb,
             Acc beta, const void* c, void* d, cudaDataType_t cd_type, int64_t ldc,
             const void* bias) {
  std::vector<double> out(static_cast<size_t>(m * n));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) {
      Acc acc = 0;
      for (int64_t p = 0; p < k; ++p) {
        const Acc x = static_cast<Acc>(Load(ab_type, a, trans_a ? p + i * lda : i + p * lda));
        const Acc y = static_cast<Acc>(Load(ab_type, b, trans_b ? j + p * ldb : p + j * ldb));
        acc += x * y;
      }
      Acc value = alpha * acc;
      if (beta != 0) value += beta * static_cast<Acc>(Load(cd_type, c, i + j * ldc));
      if (bias != nullptr) value += static_cast<Acc>(Load(cd_type, bias, i));
      out[i + j * m] = static_cast<double>(value);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < m; ++i) Store(cd_type, d, i + j * ldc, out[i + j * m]);
  }
}

// Compute in the compute type, alpha and beta read in the scale type (f64 for COMPUTE_64F).
void Run(cublasComputeType_t compute, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
         const void* alpha, const void* a, cudaDataType_t ab_type, int64_t lda, const void* b,
         int64_t ldb, const void* beta, const void* c, void* d, cudaDataType_t cd_type,
         int64_t ldc, const void* bias) {
  if (compute == CUBLAS_COMPUTE_64F) {
    Compute<double>(trans_a, trans_b, m, n, k, *static_cast<const double*>(alpha), a, ab_type,
                    lda, b, ldb, *static_cast<const double*>(beta), c, d, cd_type, ldc, bias);
  } else {
    Compute<float>(trans_a, trans_b, m, n, k, *static_cast<const float*>(alpha), a, ab_type, lda,
                   b, ldb, *static_cast<const float*>(beta), c, d, cd_type, ldc, bias);
  }
}

// The shapes of a matmul: op(A) is m x k, op(B) k x n, C and D m x n; false when the
// layouts disagree or a leading dimension is below its row count.
bool Shapes(const EmulatedLtDesc& desc, const EmulatedLtLayout& a, const EmulatedLtLayout& b,
            const EmulatedLtLayout& c, const EmulatedLtLayout& d, int64_t* m, int64_t* n,
            int64_t* k) {
  for (const EmulatedLtLayout* l : {&a, &b, &c, &d}) {
    if (l->rows <= 0 || l->cols <= 0 || l->ld < l->rows) return false;
  }
  const bool ta = desc.trans_a == CUBLAS_OP_T, tb = desc.trans_b == CUBLAS_OP_T;
  *m = ta ? a.cols : a.rows;
  *k = ta ? a.rows : a.cols;
  const int64_t kb = tb ? b.cols : b.rows;
  *n = tb ? b.rows : b.cols;
  return kb == *k && c.rows == *m && c.cols == *n && d.rows == *m && d.cols == *n &&
         c.ld == d.ld && c.type == d.type && a.type == b.type;
}

}  // namespace

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS (other)";
  }
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new EmulatedLt;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  *desc = new EmulatedLtDesc{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attribute,
                                              const void* buf, size_t size) {
  switch (attribute) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      return Set(&desc->trans_a, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB:
      return Set(&desc->trans_b, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
      uint32_t epilogue = 0;  // a uint32_t attribute in cuBLASLt
      const cublasStatus_t s = Set(&epilogue, buf, size);
      desc->epilogue = static_cast<cublasLtEpilogue_t>(epilogue);
      return s;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return Set(&desc->bias, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  *layout = new EmulatedLtLayout{type, static_cast<int64_t>(rows), static_cast<int64_t>(cols), ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* preference) {
  *preference = new EmulatedLtPreference;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
  delete preference;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t attribute,
    const void* buf, size_t size) {
  switch (attribute) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return Set(&preference->max_workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      return Set(&preference->align_a, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      return Set(&preference->align_b, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      return Set(&preference->align_c, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return Set(&preference->align_d, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t preference, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  if (requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  int64_t m, n, k;
  if (!Shapes(*desc, *a, *b, *c, *d, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!TypesSupported(desc->compute, desc->scale, a->type, c->type)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (bias && desc->compute == CUBLAS_COMPUTE_64F) return CUBLAS_STATUS_SUCCESS;  // none
  cublasLtMatmulHeuristicResult_t& r = results[0];
  r = cublasLtMatmulHeuristicResult_t{};
  r.algo.data[0] = preference->align_a;
  r.algo.data[1] = preference->align_b;
  r.algo.data[2] = preference->align_c;
  r.algo.data[3] = preference->align_d;
  r.algo.data[4] = bias ? AlignmentOf(desc->bias) : 0;
  r.workspaceSize = 0;
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* a, cublasLtMatrixLayout_t a_layout, const void* b,
                              cublasLtMatrixLayout_t b_layout, const void* beta, const void* c,
                              cublasLtMatrixLayout_t c_layout, void* d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t* algo,
                              void*, size_t, cudaStream_t) {
  int64_t m, n, k;
  if (!Shapes(*desc, *a_layout, *b_layout, *c_layout, *d_layout, &m, &n, &k) ||
      !TypesSupported(desc->compute, desc->scale, a_layout->type, c_layout->type)) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const bool bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS;
  // The algorithm was chosen for these alignments: a pointer less aligned breaks it.
  if (AlignmentOf(a) < algo->data[0] || AlignmentOf(b) < algo->data[1] ||
      AlignmentOf(c) < algo->data[2] || AlignmentOf(d) < algo->data[3] ||
      (bias && AlignmentOf(desc->bias) < algo->data[4])) {
    std::fprintf(stderr, "cuBLASLt stand-in: a pointer is less aligned than the algorithm's\n");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Run(desc->compute, desc->trans_a == CUBLAS_OP_T, desc->trans_b == CUBLAS_OP_T, m, n, k, alpha,
      a, a_layout->type, a_layout->ld, b, b_layout->ld, beta, c, d, d_layout->type, d_layout->ld,
      bias ? desc->bias : nullptr);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new EmulatedCublas;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasGemmEx_64(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb,
                               int64_t m, int64_t n, int64_t k, const void* alpha, const void* a,
                               cudaDataType a_type, int64_t lda, const void* b, cudaDataType b_type,
                               int64_t ldb, const void* beta, void* c, cudaDataType c_type,
                               int64_t ldc, cublasComputeType_t compute, cublasGemmAlgo_t) {
  const cudaDataType_t scale = compute == CUBLAS_COMPUTE_64F ? CUDA_R_64F : CUDA_R_32F;
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  if (a_type != b_type || !TypesSupported(compute, scale, a_type, c_type)) {
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (m <= 0 || n <= 0 || k <= 0 || lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Run(compute, ta, tb, m, n, k, alpha, a, a_type, lda, b, ldb, beta, c, c, c_type, ldc, nullptr);
  return CUBLAS_STATUS_SUCCESS;
}
