// Row-major GEMM through cuBLASLt, with cuBLAS as the fallback (see gemm.h).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "kernels/cuda/gemm.h"

namespace pmol::cuda {
namespace {

void CheckCublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "pmol: %s failed: %s\n", what, cublasGetStatusString(status));
    std::abort();
  }
}

[[noreturn]] void UnsupportedTypes(DType dt, DType c_dt) {
  std::fprintf(stderr, "pmol: CUDA Gemm: C of %s with A and B of %s (supported: f32, f64, "
               "bf16 with C of bf16 or f32)\n",
               DTypeName(c_dt), DTypeName(dt));
  std::abort();
}

// The largest power of two, up to 256, that divides the address: what cuBLASLt's
// MIN_ALIGNMENT preferences ask (a column slice of a row-major matrix is only as aligned
// as its offset).
uint32_t AlignmentOf(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment >>= 1;
  return alignment;
}

// The cuBLASLt types of a GEMM with A and B of dt and C of c_dt.
struct LtTypes {
  cudaDataType_t ab, c, scale;
  cublasComputeType_t compute;
};

LtTypes TypesOf(DType dt, DType c_dt) {
  if (dt == DType::kBF16 && (c_dt == DType::kBF16 || c_dt == DType::kF32)) {
    return {CUDA_R_16BF, c_dt == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, CUDA_R_32F,
            CUBLAS_COMPUTE_32F};
  }
  if (dt == DType::kF32 && c_dt == DType::kF32) {
    return {CUDA_R_32F, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F};
  }
  if (dt == DType::kF64 && c_dt == DType::kF64) {
    return {CUDA_R_64F, CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F};
  }
  UnsupportedTypes(dt, c_dt);
}

// alpha and beta as cuBLAS(Lt) reads them: in the scale type (f64 for f64 GEMMs, else f32).
class ScaleValues {
 public:
  ScaleValues(cudaDataType_t scale, double alpha, double beta)
      : f64_(scale == CUDA_R_64F),
        alpha_(alpha),
        beta_(beta),
        alpha_f_(static_cast<float>(alpha)),
        beta_f_(static_cast<float>(beta)) {}
  const void* alpha() const { return f64_ ? static_cast<const void*>(&alpha_) : &alpha_f_; }
  const void* beta() const { return f64_ ? static_cast<const void*>(&beta_) : &beta_f_; }

 private:
  bool f64_;
  double alpha_, beta_;
  float alpha_f_, beta_f_;
};

// Everything the heuristic's choice depends on.
struct PlanKey {
  DType dt, c_dt;
  bool trans_a, trans_b, bias;
  int64_t m, n, k, lda, ldb, ldc;
  uint32_t align_a, align_b, align_c, align_bias;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& key) const {
    size_t h = 0;
    const auto mix = [&h](uint64_t v) { h ^= std::hash<uint64_t>()(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    mix(static_cast<uint64_t>(key.dt));
    mix(static_cast<uint64_t>(key.c_dt));
    mix((key.trans_a ? 1u : 0u) | (key.trans_b ? 2u : 0u) | (key.bias ? 4u : 0u));
    for (int64_t v : {key.m, key.n, key.k, key.lda, key.ldb, key.ldc}) mix(static_cast<uint64_t>(v));
    mix((uint64_t{key.align_a} << 48) | (uint64_t{key.align_b} << 32) |
        (uint64_t{key.align_c} << 16) | key.align_bias);
    return h;
  }
};

// One shape's descriptors and the algorithm the heuristic chose (found = false: none).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t lt_a = nullptr, lt_b = nullptr, lt_c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (lt_c != nullptr) cublasLtMatrixLayoutDestroy(lt_c);
    if (lt_b != nullptr) cublasLtMatrixLayoutDestroy(lt_b);
    if (lt_a != nullptr) cublasLtMatrixLayoutDestroy(lt_a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

// Plans kept at most; past it the cache starts over (shapes come from a model's few
// layers times the batch shapes, far fewer in practice).
constexpr size_t kMaxPlans = 4096;

}  // namespace

struct Blas::Handles {
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t cublas = nullptr;
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  mutable std::mutex mutex;  // the plan cache and the counters
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;

  GemmCounters counters;

  // D = alpha * op(A) op(B) + beta * C (+ bias when key.bias) with key's plan, made and
  // cached on first use; false when cuBLASLt has no algorithm for it (nothing is done).
  // The caller holds `mutex`.
  bool Matmul(const PlanKey& key, double alpha, const void* a, const void* b, double beta,
              void* c, const void* bias);

  ~Handles() {
    plans.clear();
    if (cublas != nullptr) cublasDestroy(cublas);
    if (lt != nullptr) cublasLtDestroy(lt);
  }
};

namespace {

// Builds the plan of `key` (the row-major problem) as the column-major
// D^T[n,m] = op(B)^T op(A)^T: cuBLASLt's A is our B, its B our A.
std::unique_ptr<Plan> MakePlan(cublasLtHandle_t lt, const PlanKey& key, const void* bias,
                               size_t workspace_bytes) {
  const LtTypes types = TypesOf(key.dt, key.c_dt);
  auto plan = std::make_unique<Plan>();
  CheckCublas(cublasLtMatmulDescCreate(&plan->desc, types.compute, types.scale),
              "cublasLtMatmulDescCreate");
  const cublasOperation_t op_lt_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_lt_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CheckCublas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a,
                                             sizeof(op_lt_a)),
              "cublasLtMatmulDescSetAttribute(TRANSA)");
  CheckCublas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b,
                                             sizeof(op_lt_b)),
              "cublasLtMatmulDescSetAttribute(TRANSB)");
  if (key.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CheckCublas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                               &epilogue, sizeof(epilogue)),
                "cublasLtMatmulDescSetAttribute(EPILOGUE)");
    // The heuristic reads the pointer's alignment from it.
    CheckCublas(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                               &bias, sizeof(bias)),
                "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  // Stored (pre-op) shapes, column-major: row-major B [k,n] (or [n,k] transposed) is the
  // column-major [n,k] (or [k,n]); likewise A; D is [n,m].
  CheckCublas(cublasLtMatrixLayoutCreate(&plan->lt_a, types.ab, key.trans_b ? key.k : key.n,
                                         key.trans_b ? key.n : key.k, key.ldb),
              "cublasLtMatrixLayoutCreate(A)");
  CheckCublas(cublasLtMatrixLayoutCreate(&plan->lt_b, types.ab, key.trans_a ? key.m : key.k,
                                         key.trans_a ? key.k : key.m, key.lda),
              "cublasLtMatrixLayoutCreate(B)");
  CheckCublas(cublasLtMatrixLayoutCreate(&plan->lt_c, types.c, key.n, key.m, key.ldc),
              "cublasLtMatrixLayoutCreate(C)");

  cublasLtMatmulPreference_t preference = nullptr;
  CheckCublas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
  const uint64_t max_workspace = workspace_bytes;
  CheckCublas(cublasLtMatmulPreferenceSetAttribute(preference,
                                                   CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &max_workspace, sizeof(max_workspace)),
              "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c},
  };
  for (const auto& [attribute, alignment] : alignments) {
    CheckCublas(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &alignment,
                                                     sizeof(alignment)),
                "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)");
  }
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(lt, plan->desc, plan->lt_a, plan->lt_b, plan->lt_c,
                                     plan->lt_c, preference, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(preference);
  // Any failure (NOT_SUPPORTED: no heuristic for this configuration, e.g. an epilogue
  // cuBLASLt lacks for f64) leaves the plan empty: the caller falls back, and a real
  // operand error then surfaces from cuBLAS with its message.
  if (status == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
      result.workspaceSize <= workspace_bytes) {
    plan->algo = result.algo;
    plan->found = true;
  }
  return plan;
}

// The plain GEMM through cuBLAS, for shapes cuBLASLt has no algorithm for.
void CublasGemm(cublasHandle_t handle, DType dt, DType c_dt, bool trans_a, bool trans_b,
                int64_t m, int64_t n, int64_t k, double alpha, const void* a, int64_t lda,
                const void* b, int64_t ldb, double beta, void* c, int64_t ldc) {
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const LtTypes types = TypesOf(dt, c_dt);
  const ScaleValues scalars(types.scale, alpha, beta);
  CheckCublas(cublasGemmEx_64(handle, op_b, op_a, n, m, k, scalars.alpha(), b, types.ab, ldb, a,
                              types.ab, lda, scalars.beta(), c, types.c, ldc, types.compute,
                              CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
}

}  // namespace

bool Blas::Handles::Matmul(const PlanKey& key, double alpha, const void* a, const void* b,
                           double beta, void* c, const void* bias) {
  auto it = plans.find(key);
  if (it == plans.end()) {
    if (plans.size() >= kMaxPlans) plans.clear();
    it = plans.emplace(key, MakePlan(lt, key, bias, workspace_bytes)).first;
    ++counters.plans;
  }
  const Plan& plan = *it->second;
  if (!plan.found) return false;
  if (key.bias) {
    CheckCublas(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                               &bias, sizeof(bias)),
                "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  const ScaleValues scalars(TypesOf(key.dt, key.c_dt).scale, alpha, beta);
  // cuBLASLt's A is our B and its B our A (the column-major swap); C and D are c.
  CheckCublas(cublasLtMatmul(lt, plan.desc, scalars.alpha(), b, plan.lt_a, a, plan.lt_b,
                             scalars.beta(), c, plan.lt_c, c, plan.lt_c, &plan.algo, workspace,
                             workspace_bytes, stream),
              "cublasLtMatmul");
  return true;
}

Blas::Blas(std::unique_ptr<Handles> handles) : handles_(std::move(handles)) {}

Blas::~Blas() = default;

std::unique_ptr<Blas> Blas::Create(cudaStream_t stream, void* workspace, size_t workspace_bytes,
                                   std::string* error) {
  auto handles = std::make_unique<Handles>();
  handles->stream = stream;
  handles->workspace = workspace;
  handles->workspace_bytes = workspace == nullptr ? 0 : workspace_bytes;
  cublasStatus_t status = cublasLtCreate(&handles->lt);
  if (status != CUBLAS_STATUS_SUCCESS) {
    handles->lt = nullptr;
    *error = std::string("cublasLtCreate: ") + cublasGetStatusString(status);
    return nullptr;
  }
  status = cublasCreate(&handles->cublas);
  if (status != CUBLAS_STATUS_SUCCESS) {
    handles->cublas = nullptr;
    *error = std::string("cublasCreate: ") + cublasGetStatusString(status);
    return nullptr;
  }
  status = cublasSetStream(handles->cublas, stream);
  if (status == CUBLAS_STATUS_SUCCESS && handles->workspace_bytes > 0) {
    status = cublasSetWorkspace(handles->cublas, handles->workspace, handles->workspace_bytes);
  }
  if (status != CUBLAS_STATUS_SUCCESS) {
    *error = std::string("cublasSetStream/cublasSetWorkspace: ") + cublasGetStatusString(status);
    return nullptr;
  }
  return std::unique_ptr<Blas>(new Blas(std::move(handles)));
}

void Blas::RowMajorGemm(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                        int64_t ldb, double beta, void* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  const PlanKey key{dt,  c_dt, trans_a, trans_b, false,          m,
                    n,   k,    lda,     ldb,     ldc,            AlignmentOf(a),
                    AlignmentOf(b), AlignmentOf(c), 0};
  std::lock_guard<std::mutex> lock(handles_->mutex);
  if (handles_->Matmul(key, alpha, a, b, beta, c, nullptr)) {
    ++handles_->counters.lt_calls;
    return;
  }
  ++handles_->counters.cublas_fallbacks;
  CublasGemm(handles_->cublas, dt, c_dt, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
             c, ldc);
}

bool Blas::RowMajorGemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                            int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
                            const void* bias, void* c, int64_t ldc) {
  if (m <= 0 || n <= 0 || k <= 0) return false;
  const PlanKey key{dt,  dt,  trans_a, trans_b, true,           m,
                    n,   k,   lda,     ldb,     ldc,            AlignmentOf(a),
                    AlignmentOf(b), AlignmentOf(c), AlignmentOf(bias)};
  std::lock_guard<std::mutex> lock(handles_->mutex);
  if (!handles_->Matmul(key, 1.0, a, b, 0.0, c, bias)) {
    ++handles_->counters.bias_fallbacks;
    return false;
  }
  ++handles_->counters.lt_calls;
  ++handles_->counters.lt_bias_calls;
  return true;
}

GemmCounters Blas::counters() const {
  std::lock_guard<std::mutex> lock(handles_->mutex);
  return handles_->counters;
}

}  // namespace pmol::cuda
