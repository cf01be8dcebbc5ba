// What the CUDA backend's GEMMs (gemm.h) did since the backend was created: how many ran
// through cuBLASLt, with the bias epilogue or not, and how many fell back. Plain data, no
// CUDA headers, so that code built without CUDA can name it (cuda_backend.h).
#ifndef PMOL_KERNELS_CUDA_GEMM_COUNTERS_H_
#define PMOL_KERNELS_CUDA_GEMM_COUNTERS_H_

#include <cstdint>

namespace pmol::cuda {

struct GemmCounters {
  int64_t lt_calls = 0;          // GEMMs run by cuBLASLt (with or without the bias epilogue)
  int64_t lt_bias_calls = 0;     // of which with the bias epilogue
  int64_t cublas_fallbacks = 0;  // plain GEMMs cuBLASLt had no algorithm for (run by cuBLAS)
  int64_t bias_fallbacks = 0;    // GemmBias calls run as a GEMM and then AddBias
  int64_t plans = 0;             // shapes planned (heuristic queries)
};

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_GEMM_COUNTERS_H_
