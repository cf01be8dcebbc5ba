// The CUDA backend (kernels/cuda) against the CPU backend (kernels/cpu), op by op, on
// seeded random inputs with odd sizes (T = 37 and 70, head_dim 24/64/80/128 and, in bf16,
// 256, GQA 4/2 and 6/1, vocab 1001 and 32001, rows 1001 to force the multi-chunk
// reductions), in f32 and in f64, and in bf16 mixed precision (kernels/backend.h: bf16
// storage, f32 math and f32 side statistics) for the ops that have it. Outputs that an op
// overwrites start as NaN on the GPU, so an element the kernel forgets to write fails the
// comparison.
//
// Without a usable GPU (as on the build machines), CudaAvailability checks that asking
// for the CUDA backend is a clear FailedPrecondition naming the CUDA runtime's error, and
// every numeric test is skipped with that message.
//
// The same file also builds as cuda_backend_emulated_test (PMOL_CUDA_SIMT_EMULATION): the
// backend and every kernel, their own source, run on the CPU under the SIMT emulation of
// tests/cuda/simt_emulation, in every build. There the GEMM tests run kernels/cuda/gemm.cu's
// own code (the row-major to column-major mapping, the cuBLASLt plans, alignments and
// fallbacks) against a CPU stand-in of the cuBLASLt and cuBLAS calls it makes
// (simt_emulation/cublas_lt_on_cpu.cc, written from their documented column-major
// semantics), compared with the CPU backend's OpenBLAS GEMMs; the tests of the
// stream-ordered pool's caching are skipped (the emulated pool caches nothing).
//
// Tolerances. Comparison is element-wise: |gpu - cpu| <= tol * max(|cpu|, mean|cpu|);
// the mean-magnitude floor keeps entries that are small through cancellation from
// demanding more relative accuracy than the vector's scale carries.
//   f32, element-wise ops (one or two roundings per element): tol 1e-5. The GPU fuses
//     multiply-adds and uses libdevice's exp (<= 2 ulp) where the CPU uses glibc's:
//     a few ulp (1 ulp = 6e-8 relative), two orders below 1e-5.
//   f32, GEMM, attention and row/column reductions: tol 1e-4. The two backends sum in
//     different orders (tree vs. sequential/blocked, cuBLAS vs. OpenBLAS); for sums of
//     n <= ~1000 terms of similar size the difference is ~sqrt(n) ulp of the partial
//     sums, i.e. ~1e-6 .. 1e-5 relative, and the attention backward chains three such
//     products.
//   f64: 1e-12 and 1e-10 respectively (the same argument with 1 ulp = 1.1e-16).
//   Exact (bit-identical): Fill, Scale, AddBias, embedding gather, and Convert (the GPU
//     reproduces kernels/dtype.h's rounding bit for bit; NaNs need only be NaN); the
//     stored sum of RmsNormForward with a residual (one correctly rounded f32/f64 add, in
//     bf16 then rounded once more, on both backends); and, on the GPU alone, RmsNorm with
//     the residual add fused in against Axpy + the unfused op (kernels/backend.h promises
//     the same bits, except the bf16 backward, which rounds once where the pair rounds
//     twice), and each in-place form (sum_out = x, dx = residual_grad) against the other.
//   bf16 (dt = bf16, inputs random values rounded to bf16): both backends widen the same
//     bf16 values exactly, compute in f32 and round each bf16 output once (nearest even,
//     the same F32ToBf16). So where the f32 arithmetic is the same operations in the same
//     order the outputs are bit-identical: Fill, Scale, AddBias, ScaleColumnBlocks,
//     CopyRows, the embedding gather, and the embedding backward with distinct ids.
//     Otherwise the two f32 results differ by a few f32 ulps (element-wise: the GPU's
//     FMAs and libdevice exp) or by the summation order (reductions), far below a bf16
//     ulp, and rounding can still land them on neighbouring bf16 values. bf16 has 8
//     significant bits, so one ulp is 2^-8 .. 2^-7 of the value: element-wise tol 2^-7
//     (one ulp anywhere in a binade); GEMM, norms, attention, softmax and column sums tol
//     2^-6 (two ulps: the rounding step plus the f32 difference, which the mean-magnitude
//     floor keeps small where an output is small through cancellation). Attention with
//     head_dim 32/64/128 runs on tensor cores, which round P and dS to bf16 as well: it is
//     checked against the CPU in f64 instead (its test states the bound). The f32 outputs
//     of bf16 ops (inv_rms, lse, logp, ColumnBlockDots) come from the same bf16 values in
//     f32 and take the f32 reduction tolerance; GemmTo's f32 C takes 1e-5 (see its test).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/dtype.h"

namespace pmol {
namespace {

#ifdef PMOL_CUDA_SIMT_EMULATION
#define PMOL_SKIP_IF_EMULATED(what) GTEST_SKIP() << what << " is not emulated"
#else
#define PMOL_SKIP_IF_EMULATED(what) (void)0
#endif

// ---------------------------------------------------------------------------------------
// Availability: a clear status without a GPU, a working backend with one.

TEST(CudaAvailability, ClearStatusOrWorkingBackend) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  cudaGetLastError();
  absl::StatusOr<Backend*> gpu = GetBackend(DeviceType::kCuda);
  if (err != cudaSuccess || count == 0) {
    ASSERT_FALSE(gpu.ok()) << "no GPU, but GetBackend(kCuda) succeeded";
    const std::string message(gpu.status().message());
    EXPECT_EQ(gpu.status().code(), absl::StatusCode::kFailedPrecondition) << gpu.status();
    EXPECT_NE(message.find("CUDA"), std::string::npos) << message;
    EXPECT_NE(message.find("no usable GPU"), std::string::npos) << message;
    if (err != cudaSuccess) {
      EXPECT_NE(message.find(cudaGetErrorString(err)), std::string::npos) << message;
    }
    // Creating directly gives the same answer and does not crash either.
    absl::StatusOr<std::unique_ptr<Backend>> direct = CreateCudaBackend();
    ASSERT_FALSE(direct.ok());
    EXPECT_EQ(direct.status().message(), gpu.status().message());
    std::cout << "[   INFO   ] GetBackend(kCuda) without a GPU: " << gpu.status() << "\n";
    return;
  }
  cudaDeviceProp prop;
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  if (prop.major < 9) {
    ASSERT_FALSE(gpu.ok());
    EXPECT_NE(std::string(gpu.status().message()).find("compute capability"),
              std::string::npos);
    return;
  }
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ((*gpu)->device(), DeviceType::kCuda);
  EXPECT_NE((*gpu)->Name().find("cuda"), std::string::npos) << (*gpu)->Name();
  std::cout << "[   INFO   ] " << (*gpu)->Name() << "\n";
}

// ---------------------------------------------------------------------------------------
// Helpers.

// The CUDA backend, or the reason there is none (empty when there is one).
Backend* Gpu(std::string* reason) {
  absl::StatusOr<Backend*> gpu = GetBackend(DeviceType::kCuda);
  if (!gpu.ok()) {
    *reason = std::string(gpu.status().message());
    return nullptr;
  }
  return *gpu;
}

Backend* Cpu() {
  absl::StatusOr<Backend*> cpu = GetBackend(DeviceType::kCpu);
  return cpu.ok() ? *cpu : nullptr;
}

template <typename T>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<T, Bf16>) return DType::kBF16;
  return std::is_same_v<T, float> ? DType::kF32 : DType::kF64;
}

template <typename T>
struct Tol {
  static constexpr double kElementwise = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  static constexpr double kReduction = std::is_same_v<T, float> ? 1e-4 : 1e-10;
};
// bf16 outputs: one ulp (element-wise) and two ulps (reductions); see the file comment.
template <>
struct Tol<Bf16> {
  static constexpr double kElementwise = 0x1p-7;
  static constexpr double kReduction = 0x1p-6;
};

// A buffer on the GPU. From host data, or of n elements set to NaN (for outputs).
template <typename T>
class GpuArray {
 public:
  GpuArray(Backend* gpu, const std::vector<T>& host) : gpu_(gpu), n_(host.size()) {
    ptr_ = gpu_->Allocate(Bytes());
    gpu_->CopyFromHost(ptr_, host.data(), Bytes());
  }
  GpuArray(Backend* gpu, size_t n) : gpu_(gpu), n_(n) {
    ptr_ = gpu_->Allocate(Bytes());
    if constexpr (std::is_floating_point_v<T> || std::is_same_v<T, Bf16>) {
      gpu_->Fill(DTypeOf<T>(), ptr_, std::numeric_limits<double>::quiet_NaN(),
                 static_cast<int64_t>(n));
    }
  }
  ~GpuArray() { gpu_->Free(ptr_); }
  GpuArray(const GpuArray&) = delete;
  GpuArray& operator=(const GpuArray&) = delete;

  void* get() const { return ptr_; }
  T* data() const { return static_cast<T*>(ptr_); }
  std::vector<T> ToHost() const {
    std::vector<T> host(n_);
    gpu_->CopyToHost(host.data(), ptr_, Bytes());
    return host;
  }

 private:
  size_t Bytes() const { return n_ * sizeof(T); }
  Backend* gpu_;
  size_t n_;
  void* ptr_;
};

// Uniform in [lo, hi); a Bf16 gets the value rounded to bf16 (through f32).
template <typename T>
std::vector<T> Uniform(std::mt19937& rng, size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) {
    if constexpr (std::is_same_v<T, Bf16>) {
      x = static_cast<float>(dist(rng));
    } else {
      x = static_cast<T>(dist(rng));
    }
  }
  return v;
}

template <typename T>
double MaxAbs(const std::vector<T>& v) {
  double m = 0.0;
  for (T x : v) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

std::vector<int32_t> Ints(std::mt19937& rng, size_t n, int32_t lo, int32_t hi_inclusive) {
  std::uniform_int_distribution<int32_t> dist(lo, hi_inclusive);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

// |got - want| <= tol * max(|want|, mean |want|, min_floor), element-wise (see the file
// comment). min_floor: for outputs that are small through cancellation as a whole (then
// the mean is no scale either), the size the output has without the cancellation.
template <typename T>
void ExpectClose(const std::vector<T>& got, const std::vector<T>& want, double tol,
                 const std::string& what, double min_floor = 0.0) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double floor = 0.0;
  for (T w : want) floor += std::fabs(static_cast<double>(w));
  floor = want.empty() ? 1.0 : floor / static_cast<double>(want.size());
  floor = std::max(floor, min_floor);
  if (floor == 0.0) floor = 1.0;
  int64_t bad = 0;
  int64_t worst_index = -1;
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double w = want[i];
    const double g = got[i];
    const double err = std::fabs(g - w) / std::max(std::fabs(w), floor);
    if (!(err <= tol)) {
      ++bad;
      if (worst_index < 0 || !(err <= worst)) {
        worst = err;
        worst_index = static_cast<int64_t>(i);
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size()
                    << " elements differ; worst at " << worst_index << ": gpu "
                    << (worst_index >= 0 ? static_cast<double>(got[worst_index]) : 0.0)
                    << " cpu "
                    << (worst_index >= 0 ? static_cast<double>(want[worst_index]) : 0.0)
                    << " (relative error " << worst << ", tolerance " << tol << ")";
}

template <typename T>
void ExpectBitwiseEqual(const std::vector<T>& got, const std::vector<T>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int64_t bad = 0;
  int64_t first = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      ++bad;
      if (first < 0) first = static_cast<int64_t>(i);
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size()
                    << " elements differ in their bits; first at " << first;
}

// The GEMM counters of a CUDA backend (kernels/cuda/gemm_counters.h).
cuda::GemmCounters GemmCountersOf(Backend* gpu) {
  absl::StatusOr<cuda::GemmCounters> counters = CudaBackendGemmCounters(gpu);
  EXPECT_TRUE(counters.ok()) << counters.status();
  return counters.value_or(cuda::GemmCounters());
}

std::string Describe(const cuda::GemmCounters& c) {
  return "cuBLASLt " + std::to_string(c.lt_calls) + " (bias epilogue " +
         std::to_string(c.lt_bias_calls) + "), cuBLAS fallbacks " +
         std::to_string(c.cublas_fallbacks) + ", bias fallbacks " +
         std::to_string(c.bias_fallbacks) + ", plans " + std::to_string(c.plans);
}

// Plain GEMMs since `before` ran through cuBLASLt. Under the emulation its stand-in has an
// algorithm for every one of them, so a fallback to cuBLAS there means gemm.cu described
// a matrix wrongly (a heuristic query it refused); on a GPU a fallback is legitimate
// (cuBLASLt's offer depends on the device) and is only reported.
void ExpectCublasLtRan(Backend* gpu, const cuda::GemmCounters& before, const std::string& what) {
  const cuda::GemmCounters now = GemmCountersOf(gpu);
#ifdef PMOL_CUDA_SIMT_EMULATION
  EXPECT_EQ(now.cublas_fallbacks, before.cublas_fallbacks) << what << ": " << Describe(now);
#else
  if (now.cublas_fallbacks != before.cublas_fallbacks) {
    std::cout << "[   INFO   ] " << what << ": " << now.cublas_fallbacks - before.cublas_fallbacks
              << " GEMMs fell back to cublasGemmEx\n";
  }
#endif
}

// ---------------------------------------------------------------------------------------
// Typed fixture: every op in f32 and f64.

template <typename T>
class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    gpu_ = Gpu(&reason);
    if (gpu_ == nullptr) GTEST_SKIP() << "CUDA backend unavailable: " << reason;
    cpu_ = Cpu();
    ASSERT_NE(cpu_, nullptr);
  }

  static constexpr DType kDt = DTypeOf<T>();
  Backend* gpu_ = nullptr;
  Backend* cpu_ = nullptr;
  std::mt19937 rng_{20240611};
};

using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CudaOps, FloatTypes);

TYPED_TEST(CudaOps, FillScaleAxpyAddBias) {
  using T = TypeParam;
  const int64_t rows = 37, cols = 61, n = rows * cols;
  std::vector<T> x = Uniform<T>(this->rng_, n);
  std::vector<T> y = Uniform<T>(this->rng_, n);
  std::vector<T> bias = Uniform<T>(this->rng_, cols);

  GpuArray<T> filled(this->gpu_, n);
  this->gpu_->Fill(this->kDt, filled.get(), 0.3, n);
  std::vector<T> want_fill(n);
  this->cpu_->Fill(this->kDt, want_fill.data(), 0.3, n);
  ExpectBitwiseEqual(filled.ToHost(), want_fill, "Fill");

  GpuArray<T> gx(this->gpu_, x);
  this->gpu_->Scale(this->kDt, -1.7, gx.get(), n);
  std::vector<T> want_scale = x;
  this->cpu_->Scale(this->kDt, -1.7, want_scale.data(), n);
  ExpectBitwiseEqual(gx.ToHost(), want_scale, "Scale");

  GpuArray<T> gx2(this->gpu_, x);
  GpuArray<T> gy(this->gpu_, y);
  this->gpu_->Axpy(this->kDt, 0.7, gx2.get(), gy.get(), n);
  std::vector<T> want_axpy = y;
  this->cpu_->Axpy(this->kDt, 0.7, x.data(), want_axpy.data(), n);
  ExpectClose(gy.ToHost(), want_axpy, Tol<T>::kElementwise, "Axpy");

  GpuArray<T> gy2(this->gpu_, y);
  GpuArray<T> gbias(this->gpu_, bias);
  this->gpu_->AddBias(this->kDt, gy2.get(), gbias.get(), rows, cols);
  std::vector<T> want_bias = y;
  this->cpu_->AddBias(this->kDt, want_bias.data(), bias.data(), rows, cols);
  ExpectBitwiseEqual(gy2.ToHost(), want_bias, "AddBias");
}

TYPED_TEST(CudaOps, SumRowsSmallAndMultiChunk) {
  using T = TypeParam;
  for (int64_t rows : {1, 37, 1001}) {
    for (int64_t cols : {24, 61, 300}) {
      std::vector<T> dy = Uniform<T>(this->rng_, rows * cols);
      std::vector<T> dbias = Uniform<T>(this->rng_, cols);  // accumulated into
      GpuArray<T> gdy(this->gpu_, dy);
      GpuArray<T> gdbias(this->gpu_, dbias);
      this->gpu_->SumRows(this->kDt, gdy.get(), rows, cols, gdbias.get());
      this->cpu_->SumRows(this->kDt, dy.data(), rows, cols, dbias.data());
      ExpectClose(gdbias.ToHost(), dbias, Tol<T>::kReduction,
                  "SumRows rows=" + std::to_string(rows) + " cols=" + std::to_string(cols));
    }
  }
}

// AdamWStep: element-wise, kElementwise tolerance on p, m, v (a few roundings each; the
// GPU contracts multiply-adds). SumSquares: both backends square and sum in f64 (in
// different orders), so 1e-12 in either T; the GPU result must also repeat bit for bit.
TYPED_TEST(CudaOps, AdamWStepAndSumSquares) {
  using T = TypeParam;
  const int64_t n = 70001;
  std::vector<T> p = Uniform<T>(this->rng_, n), g = Uniform<T>(this->rng_, n);
  std::vector<T> m = Uniform<T>(this->rng_, n, -0.5, 0.5), v = Uniform<T>(this->rng_, n, 0.0, 1.0);
  for (int64_t i = 0; i < n; i += 5) g[i] *= static_cast<T>(1e-9);  // eps matters there
  AdamWScalars s;
  s.lr = 1e-2;
  s.weight_decay = 0.1;
  s.bias_correction1 = 1.0 - std::pow(0.9, 3);
  s.bias_correction2 = 1.0 - std::pow(0.999, 3);
  GpuArray<T> gp(this->gpu_, p), gg(this->gpu_, g), gm(this->gpu_, m), gv(this->gpu_, v);
  this->gpu_->AdamWStep(this->kDt, s, gp.get(), gg.get(), gm.get(), gv.get(), n);
  this->cpu_->AdamWStep(this->kDt, s, p.data(), g.data(), m.data(), v.data(), n);
  ExpectClose(gp.ToHost(), p, Tol<T>::kElementwise, "AdamWStep p");
  ExpectClose(gm.ToHost(), m, Tol<T>::kElementwise, "AdamWStep m");
  ExpectClose(gv.ToHost(), v, Tol<T>::kElementwise, "AdamWStep v");

  for (int64_t count : {int64_t{1}, int64_t{1000}, n}) {
    const std::string what = "SumSquares n=" + std::to_string(count);
    GpuArray<double> acc(this->gpu_, std::vector<double>{0.5});
    this->gpu_->SumSquares(this->kDt, gp.get(), count, acc.get());
    double want = 0.5;
    this->cpu_->SumSquares(this->kDt, gp.ToHost().data(), count, &want);
    const std::vector<double> got = acc.ToHost();
    ExpectClose(got, {want}, 1e-12, what);
    GpuArray<double> again(this->gpu_, std::vector<double>{0.5});
    this->gpu_->SumSquares(this->kDt, gp.get(), count, again.get());
    ExpectBitwiseEqual(again.ToHost(), got, what + " repeat");
  }
}

TYPED_TEST(CudaOps, Gemm) {
  using T = TypeParam;
  const int64_t m = 37, n = 29, k = 45;
  const cuda::GemmCounters before = GemmCountersOf(this->gpu_);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (double beta : {0.0, 0.3}) {
        const std::string what = std::string("Gemm ta=") + (ta ? "1" : "0") +
                                 " tb=" + (tb ? "1" : "0") + " beta=" + std::to_string(beta);
        // Row-major storage with padded leading dimensions.
        const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k;
        const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n;
        const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = n + 2;
        std::vector<T> a = Uniform<T>(this->rng_, a_rows * lda);
        std::vector<T> b = Uniform<T>(this->rng_, b_rows * ldb);
        std::vector<T> c = Uniform<T>(this->rng_, m * ldc);
        std::vector<T> c_gpu_init = c;
        if (beta == 0.0) {  // C is not read when beta = 0, even if it holds NaN
          for (T& v : c_gpu_init) v = std::numeric_limits<T>::quiet_NaN();
          for (T& v : c) v = T(0);
        }
        GpuArray<T> ga(this->gpu_, a), gb(this->gpu_, b), gc(this->gpu_, c_gpu_init);
        this->gpu_->Gemm(this->kDt, ta, tb, m, n, k, 0.7, ga.get(), lda, gb.get(), ldb, beta,
                         gc.get(), ldc);
        this->cpu_->Gemm(this->kDt, ta, tb, m, n, k, 0.7, a.data(), lda, b.data(), ldb, beta,
                         c.data(), ldc);
        std::vector<T> got = gc.ToHost();
        if (beta == 0.0) {  // compare only the m x n block; padding stays NaN on the GPU
          std::vector<T> got_block, want_block;
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              got_block.push_back(got[i * ldc + j]);
              want_block.push_back(c[i * ldc + j]);
            }
          }
          ExpectClose(got_block, want_block, Tol<T>::kReduction, what);
        } else {
          ExpectClose(got, c, Tol<T>::kReduction, what);
        }
      }
    }
  }
  ExpectCublasLtRan(this->gpu_, before, "Gemm");
}

// GemmBias (a linear layer with its bias: one cuBLASLt kernel with the bias epilogue,
// or the GEMM then AddBias where cuBLASLt has none) against the CPU's GEMM then AddBias;
// C starts as NaN (it is overwritten, never read).
TYPED_TEST(CudaOps, GemmBias) {
  using T = TypeParam;
  const int64_t m = 37, n = 29, k = 45;
  const cuda::GemmCounters before = GemmCountersOf(this->gpu_);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const std::string what = std::string("GemmBias ta=") + (ta ? "1" : "0") +
                               " tb=" + (tb ? "1" : "0");
      const int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5;
      const std::vector<T> a = Uniform<T>(this->rng_, (ta ? k : m) * lda);
      const std::vector<T> b = Uniform<T>(this->rng_, (tb ? n : k) * ldb);
      const std::vector<T> bias = Uniform<T>(this->rng_, n);
      std::vector<T> c(m * n, std::numeric_limits<T>::quiet_NaN());
      GpuArray<T> ga(this->gpu_, a), gb(this->gpu_, b), gbias(this->gpu_, bias),
          gc(this->gpu_, c);
      this->gpu_->GemmBias(this->kDt, ta, tb, m, n, k, ga.get(), lda, gb.get(), ldb,
                           gbias.get(), gc.get());
      this->cpu_->GemmBias(this->kDt, ta, tb, m, n, k, a.data(), lda, b.data(), ldb,
                           bias.data(), c.data());
      ExpectClose(gc.ToHost(), c, Tol<T>::kReduction, what);
    }
  }
  const cuda::GemmCounters after = GemmCountersOf(this->gpu_);
  std::cout << "[   INFO   ] " << DTypeName(this->kDt) << " GemmBias x4: "
            << after.lt_bias_calls - before.lt_bias_calls << " with the bias epilogue, "
            << after.bias_fallbacks - before.bias_fallbacks << " GEMM + AddBias\n";
  EXPECT_EQ(after.lt_bias_calls - before.lt_bias_calls + after.bias_fallbacks -
                before.bias_fallbacks,
            4);
#ifdef PMOL_CUDA_SIMT_EMULATION
  // The stand-in has an f32 bias algorithm and no f64 one (so both paths run here).
  EXPECT_EQ(after.lt_bias_calls - before.lt_bias_calls, this->kDt == DType::kF32 ? 4 : 0);
#endif
}

TYPED_TEST(CudaOps, GemmWithEmptyInnerDimensionScalesC) {
  using T = TypeParam;
  const int64_t m = 5, n = 7;
  std::vector<T> c = Uniform<T>(this->rng_, m * n);
  GpuArray<T> gc(this->gpu_, c);
  this->gpu_->Gemm(this->kDt, false, false, m, n, 0, 1.0, nullptr, 1, nullptr, n, 0.5,
                   gc.get(), n);
  for (T& v : c) v *= T(0.5);  // C = beta * C, exactly
  ExpectBitwiseEqual(gc.ToHost(), c, "Gemm k=0");
}

TYPED_TEST(CudaOps, Embedding) {
  using T = TypeParam;
  const int64_t vocab = 1001, dim = 24;
  for (int64_t n : {int64_t{37}, int64_t{4099}}) {
    std::vector<T> table = Uniform<T>(this->rng_, vocab * dim);
    // Many repeats (ids 0..9 often, the rest of the vocabulary sometimes).
    std::vector<int32_t> ids = Ints(this->rng_, n, 0, 9);
    std::vector<int32_t> far = Ints(this->rng_, n, 0, vocab - 1);
    for (int64_t i = 0; i < n; i += 3) ids[i] = far[i];

    GpuArray<T> gtable(this->gpu_, table);
    GpuArray<int32_t> gids(this->gpu_, ids);
    GpuArray<T> gout(this->gpu_, n * dim);
    this->gpu_->EmbeddingForward(this->kDt, gtable.get(), gids.data(), n, dim, gout.get());
    std::vector<T> out(n * dim);
    this->cpu_->EmbeddingForward(this->kDt, table.data(), ids.data(), n, dim, out.data());
    ExpectBitwiseEqual(gout.ToHost(), out, "EmbeddingForward");

    std::vector<T> dout = Uniform<T>(this->rng_, n * dim);
    std::vector<T> dtable = Uniform<T>(this->rng_, vocab * dim);  // accumulated into
    GpuArray<T> gdout(this->gpu_, dout);
    GpuArray<T> gdtable(this->gpu_, dtable);
    GpuArray<T> gdtable2(this->gpu_, dtable);
    this->gpu_->EmbeddingBackward(this->kDt, this->kDt, gdout.get(), gids.data(), n, dim,
                                  gdtable.get());
    this->gpu_->EmbeddingBackward(this->kDt, this->kDt, gdout.get(), gids.data(), n, dim,
                                  gdtable2.get());
    this->cpu_->EmbeddingBackward(this->kDt, this->kDt, dout.data(), ids.data(), n, dim,
                                  dtable.data());
    const std::vector<T> got = gdtable.ToHost();
    ExpectClose(got, dtable, Tol<T>::kReduction, "EmbeddingBackward n=" + std::to_string(n));
    ExpectBitwiseEqual(gdtable2.ToHost(), got, "EmbeddingBackward run-to-run");
  }
}

TYPED_TEST(CudaOps, RmsNorm) {
  using T = TypeParam;
  const double eps = 1e-5;
  for (int64_t rows : {int64_t{37}, int64_t{1001}}) {
    for (int64_t dim : {int64_t{24}, int64_t{64}, int64_t{1001}}) {
      const std::string what = " rows=" + std::to_string(rows) + " dim=" + std::to_string(dim);
      std::vector<T> x = Uniform<T>(this->rng_, rows * dim, -2.0, 2.0);
      std::vector<T> w = Uniform<T>(this->rng_, dim, 0.5, 1.5);
      std::vector<T> dy = Uniform<T>(this->rng_, rows * dim);
      std::vector<T> dw = Uniform<T>(this->rng_, dim);  // accumulated into

      GpuArray<T> gx(this->gpu_, x), gw(this->gpu_, w), gdy(this->gpu_, dy);
      GpuArray<T> gy(this->gpu_, rows * dim), gr(this->gpu_, rows), gy2(this->gpu_, rows * dim);
      this->gpu_->RmsNormForward(this->kDt, gx.get(), nullptr, gw.get(), eps, rows, dim,
                                 nullptr, gy.get(), gr.get());
      this->gpu_->RmsNormForward(this->kDt, gx.get(), nullptr, gw.get(), eps, rows, dim,
                                 nullptr, gy2.get(), nullptr);
      std::vector<T> y(rows * dim), r(rows);
      this->cpu_->RmsNormForward(this->kDt, x.data(), nullptr, w.data(), eps, rows, dim,
                                 nullptr, y.data(), r.data());
      ExpectClose(gy.ToHost(), y, Tol<T>::kReduction, "RmsNormForward y" + what);
      ExpectClose(gr.ToHost(), r, Tol<T>::kReduction, "RmsNormForward inv_rms" + what);
      ExpectBitwiseEqual(gy2.ToHost(), gy.ToHost(), "RmsNormForward without inv_rms" + what);

      // Backward from each backend's own inv_rms.
      GpuArray<T> gdx(this->gpu_, rows * dim), gdx2(this->gpu_, rows * dim);
      GpuArray<T> gdw(this->gpu_, dw);
      this->gpu_->RmsNormBackward(this->kDt, gx.get(), gw.get(), gr.get(), gdy.get(), nullptr,
                                  rows, dim, gdx.get(), gdw.get());
      this->gpu_->RmsNormBackward(this->kDt, gx.get(), gw.get(), gr.get(), gdy.get(), nullptr,
                                  rows, dim, gdx2.get(), nullptr);
      std::vector<T> dx(rows * dim);
      this->cpu_->RmsNormBackward(this->kDt, x.data(), w.data(), r.data(), dy.data(), nullptr,
                                  rows, dim, dx.data(), dw.data());
      ExpectClose(gdx.ToHost(), dx, Tol<T>::kReduction, "RmsNormBackward dx" + what);
      ExpectClose(gdw.ToHost(), dw, Tol<T>::kReduction, "RmsNormBackward dw" + what);
      ExpectBitwiseEqual(gdx2.ToHost(), gdx.ToHost(), "RmsNormBackward without dw" + what);

      // The residual add fused in: against the CPU's fused ops (sum_out is one correctly
      // rounded add on both), bit for bit against this backend's Axpy + unfused ops
      // (kernels/backend.h), and in place (sum_out = x, dx = residual_grad).
      const std::vector<T> res = Uniform<T>(this->rng_, rows * dim);
      const std::vector<T> dres = Uniform<T>(this->rng_, rows * dim);
      std::vector<T> fdw = Uniform<T>(this->rng_, dim);  // accumulated into
      GpuArray<T> gres(this->gpu_, res), gdres(this->gpu_, dres);
      GpuArray<T> gs(this->gpu_, rows * dim), gfy(this->gpu_, rows * dim), gfr(this->gpu_, rows);
      this->gpu_->RmsNormForward(this->kDt, gx.get(), gres.get(), gw.get(), eps, rows, dim,
                                 gs.get(), gfy.get(), gfr.get());
      std::vector<T> s(rows * dim), fy(rows * dim), fr(rows);
      this->cpu_->RmsNormForward(this->kDt, x.data(), res.data(), w.data(), eps, rows, dim,
                                 s.data(), fy.data(), fr.data());
      const std::vector<T> got_s = gs.ToHost(), got_fy = gfy.ToHost(), got_fr = gfr.ToHost();
      ExpectBitwiseEqual(got_s, s, "fused RmsNormForward sum_out" + what);
      ExpectClose(got_fy, fy, Tol<T>::kReduction, "fused RmsNormForward y" + what);
      ExpectClose(got_fr, fr, Tol<T>::kReduction, "fused RmsNormForward inv_rms" + what);
      GpuArray<T> gu(this->gpu_, x), guy(this->gpu_, rows * dim), gur(this->gpu_, rows);
      this->gpu_->Axpy(this->kDt, 1.0, gres.get(), gu.get(), rows * dim);
      this->gpu_->RmsNormForward(this->kDt, gu.get(), nullptr, gw.get(), eps, rows, dim,
                                 nullptr, guy.get(), gur.get());
      ExpectBitwiseEqual(gu.ToHost(), got_s, "fused vs unfused sum" + what);
      ExpectBitwiseEqual(guy.ToHost(), got_fy, "fused vs unfused y" + what);
      ExpectBitwiseEqual(gur.ToHost(), got_fr, "fused vs unfused inv_rms" + what);
      GpuArray<T> gxi(this->gpu_, x), gyi(this->gpu_, rows * dim), gri(this->gpu_, rows);
      this->gpu_->RmsNormForward(this->kDt, gxi.get(), gres.get(), gw.get(), eps, rows, dim,
                                 gxi.get(), gyi.get(), gri.get());
      ExpectBitwiseEqual(gxi.ToHost(), got_s, "fused sum_out = x" + what);
      ExpectBitwiseEqual(gyi.ToHost(), got_fy, "fused y, sum_out = x" + what);
      ExpectBitwiseEqual(gri.ToHost(), got_fr, "fused inv_rms, sum_out = x" + what);

      GpuArray<T> gfdx(this->gpu_, rows * dim), gfdw(this->gpu_, fdw);
      this->gpu_->RmsNormBackward(this->kDt, gs.get(), gw.get(), gfr.get(), gdy.get(),
                                  gdres.get(), rows, dim, gfdx.get(), gfdw.get());
      std::vector<T> fdx(rows * dim);
      this->cpu_->RmsNormBackward(this->kDt, s.data(), w.data(), fr.data(), dy.data(),
                                  dres.data(), rows, dim, fdx.data(), fdw.data());
      const std::vector<T> got_fdx = gfdx.ToHost();
      ExpectClose(got_fdx, fdx, Tol<T>::kReduction, "fused RmsNormBackward dx" + what);
      ExpectClose(gfdw.ToHost(), fdw, Tol<T>::kReduction, "fused RmsNormBackward dw" + what);
      GpuArray<T> gudx(this->gpu_, rows * dim);
      this->gpu_->RmsNormBackward(this->kDt, gs.get(), gw.get(), gfr.get(), gdy.get(), nullptr,
                                  rows, dim, gudx.get(), nullptr);
      this->gpu_->Axpy(this->kDt, 1.0, gdres.get(), gudx.get(), rows * dim);
      ExpectBitwiseEqual(gudx.ToHost(), got_fdx, "fused vs unfused dx" + what);
      GpuArray<T> gdxi(this->gpu_, dres);
      this->gpu_->RmsNormBackward(this->kDt, gs.get(), gw.get(), gfr.get(), gdy.get(),
                                  gdxi.get(), rows, dim, gdxi.get(), nullptr);
      ExpectBitwiseEqual(gdxi.ToHost(), got_fdx, "fused dx = residual_grad" + what);
    }
  }
}

TYPED_TEST(CudaOps, Rope) {
  using T = TypeParam;
  const int64_t tokens = 37, heads = 6, max_pos = 100;
  for (int64_t head_dim : {int64_t{24}, int64_t{64}}) {
    const int64_t half = head_dim / 2;
    std::vector<T> cos(max_pos * half), sin(max_pos * half);
    for (int64_t p = 0; p < max_pos; ++p) {
      for (int64_t j = 0; j < half; ++j) {
        const double angle = p * std::pow(10000.0, -2.0 * j / head_dim);
        cos[p * half + j] = static_cast<T>(std::cos(angle));
        sin[p * half + j] = static_cast<T>(std::sin(angle));
      }
    }
    std::vector<int32_t> positions = Ints(this->rng_, tokens, 0, max_pos - 1);
    std::vector<T> x = Uniform<T>(this->rng_, tokens * heads * head_dim);
    GpuArray<T> gcos(this->gpu_, cos), gsin(this->gpu_, sin);
    GpuArray<int32_t> gpos(this->gpu_, positions);
    for (bool inverse : {false, true}) {
      const std::string what =
          "ApplyRope d=" + std::to_string(head_dim) + (inverse ? " inverse" : "");
      GpuArray<T> gx(this->gpu_, x);
      this->gpu_->ApplyRope(this->kDt, gx.get(), tokens, heads, head_dim, gcos.get(),
                            gsin.get(), gpos.data(), inverse);
      std::vector<T> want = x;
      this->cpu_->ApplyRope(this->kDt, want.data(), tokens, heads, head_dim, cos.data(),
                            sin.data(), positions.data(), inverse);
      ExpectClose(gx.ToHost(), want, Tol<T>::kElementwise, what);
      // The inverse undoes the rotation.
      this->gpu_->ApplyRope(this->kDt, gx.get(), tokens, heads, head_dim, gcos.get(),
                            gsin.get(), gpos.data(), !inverse);
      ExpectClose(gx.ToHost(), x, Tol<T>::kElementwise, what + " round trip");
    }
  }
}

TYPED_TEST(CudaOps, SwiGlu) {
  using T = TypeParam;
  const int64_t n = 1001;
  std::vector<T> gate = Uniform<T>(this->rng_, n, -8.0, 8.0);
  std::vector<T> up = Uniform<T>(this->rng_, n, -2.0, 2.0);
  std::vector<T> dout = Uniform<T>(this->rng_, n);
  GpuArray<T> ggate(this->gpu_, gate), gup(this->gpu_, up), gdout(this->gpu_, dout);
  GpuArray<T> gout(this->gpu_, n), gdgate(this->gpu_, n), gdup(this->gpu_, n);
  this->gpu_->SwiGluForward(this->kDt, ggate.get(), gup.get(), gout.get(), n);
  this->gpu_->SwiGluBackward(this->kDt, ggate.get(), gup.get(), gdout.get(), gdgate.get(),
                             gdup.get(), n);
  std::vector<T> out(n), dgate(n), dup(n);
  this->cpu_->SwiGluForward(this->kDt, gate.data(), up.data(), out.data(), n);
  this->cpu_->SwiGluBackward(this->kDt, gate.data(), up.data(), dout.data(), dgate.data(),
                             dup.data(), n);
  ExpectClose(gout.ToHost(), out, Tol<T>::kElementwise, "SwiGluForward");
  ExpectClose(gdgate.ToHost(), dgate, Tol<T>::kElementwise, "SwiGluBackward dgate");
  ExpectClose(gdup.ToHost(), dup, Tol<T>::kElementwise, "SwiGluBackward dup");
}

TYPED_TEST(CudaOps, LogSoftmaxGather) {
  using T = TypeParam;
  const int64_t rows = 37;
  for (int64_t vocab : {int64_t{1001}, int64_t{32001}}) {
    const std::string what = " vocab=" + std::to_string(vocab);
    std::vector<T> logits = Uniform<T>(this->rng_, rows * vocab, -6.0, 6.0);
    std::vector<int32_t> targets = Ints(this->rng_, rows, 0, static_cast<int32_t>(vocab - 1));
    targets[3] = -1;  // ignored rows
    targets[20] = -100;
    std::vector<T> dlogp = Uniform<T>(this->rng_, rows);
    GpuArray<T> glogits(this->gpu_, logits), gdlogp(this->gpu_, dlogp);
    GpuArray<int32_t> gtargets(this->gpu_, targets);
    GpuArray<T> glogp(this->gpu_, rows), glse(this->gpu_, rows);
    GpuArray<T> gdlogits(this->gpu_, rows * vocab);
    this->gpu_->LogSoftmaxGather(this->kDt, glogits.get(), gtargets.data(), rows, vocab,
                                 glogp.get(), glse.get());
    this->gpu_->LogSoftmaxGatherBackward(this->kDt, glogits.get(), gtargets.data(), glse.get(),
                                         gdlogp.get(), rows, vocab, gdlogits.get());
    std::vector<T> logp(rows), lse(rows), dlogits(rows * vocab);
    this->cpu_->LogSoftmaxGather(this->kDt, logits.data(), targets.data(), rows, vocab,
                                 logp.data(), lse.data());
    this->cpu_->LogSoftmaxGatherBackward(this->kDt, logits.data(), targets.data(), lse.data(),
                                         dlogp.data(), rows, vocab, dlogits.data());
    const std::vector<T> got_logp = glogp.ToHost();
    ExpectClose(got_logp, logp, Tol<T>::kReduction, "LogSoftmaxGather logp" + what);
    ExpectClose(glse.ToHost(), lse, Tol<T>::kReduction, "LogSoftmaxGather lse" + what);
    EXPECT_EQ(got_logp[3], T(0));
    EXPECT_EQ(got_logp[20], T(0));
    ExpectClose(gdlogits.ToHost(), dlogits, Tol<T>::kReduction,
                "LogSoftmaxGatherBackward" + what);
  }
}

// The router's softmax: 7 slots (the benchmark's 3 x 2 + 1) over many rows, and 1500
// columns (several warps and a partial one); in place on the GPU, as the router runs it.
TYPED_TEST(CudaOps, RowSoftmax) {
  using T = TypeParam;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{8192, 7}, {37, 1500}}) {
    const std::string what = " cols=" + std::to_string(cols);
    const double scale = 1.0 / 0.7;
    std::vector<T> x = Uniform<T>(this->rng_, rows * cols, -4.0, 4.0);
    std::vector<T> dy = Uniform<T>(this->rng_, rows * cols);
    GpuArray<T> gy(this->gpu_, x), gdx(this->gpu_, dy);
    this->gpu_->RowSoftmax(this->kDt, gy.get(), rows, cols, scale, gy.get());
    this->gpu_->RowSoftmaxBackward(this->kDt, gy.get(), gdx.get(), rows, cols, scale, gdx.get());
    std::vector<T> y(rows * cols), dx(rows * cols);
    this->cpu_->RowSoftmax(this->kDt, x.data(), rows, cols, scale, y.data());
    this->cpu_->RowSoftmaxBackward(this->kDt, y.data(), dy.data(), rows, cols, scale, dx.data());
    ExpectClose(gy.ToHost(), y, Tol<T>::kReduction, "RowSoftmax" + what);
    ExpectClose(gdx.ToHost(), dx, Tol<T>::kReduction, "RowSoftmaxBackward" + what);
  }
}

// Top-k routing: the benchmark router's 7 slots (6 experts) with k = 2, over many rows
// (several scan tiles of the capacity pass), with planted ties (the selection must agree
// exactly, ties to the lower slot), without and with a capacity of 500 rows per expert
// (about half the selections dropped), and the backward accumulated into a nonzero dg.
TYPED_TEST(CudaOps, RouterTopK) {
  using T = TypeParam;
  const int64_t rows = 4099, slots = 7, experts = 6, k = 2;
  std::vector<T> probs = Uniform<T>(this->rng_, rows * slots, 0.01, 1.0);
  for (int64_t r = 0; r < rows; r += 5) probs[r * slots + 4] = probs[r * slots + 1];  // ties
  std::vector<T> dgates = Uniform<T>(this->rng_, rows * experts);
  std::vector<T> dg0 = Uniform<T>(this->rng_, rows * slots);
  for (int64_t capacity : {int64_t{0}, int64_t{500}}) {
    const std::string what = " capacity=" + std::to_string(capacity);
    GpuArray<T> gprobs(this->gpu_, probs), gdgates(this->gpu_, dgates), gdg(this->gpu_, dg0);
    GpuArray<T> gsel(this->gpu_, rows * slots), ggates(this->gpu_, rows * experts),
        gtop(this->gpu_, rows);
    this->gpu_->RouterTopK(this->kDt, gprobs.get(), rows, slots, experts, k, capacity,
                           gsel.get(), ggates.get(), gtop.get());
    this->gpu_->RouterTopKBackward(this->kDt, gsel.get(), ggates.get(), gtop.get(),
                                   gdgates.get(), rows, slots, experts, gdg.get());
    std::vector<T> sel(rows * slots), gates(rows * experts), top(rows), dg = dg0;
    this->cpu_->RouterTopK(this->kDt, probs.data(), rows, slots, experts, k, capacity,
                           sel.data(), gates.data(), top.data());
    this->cpu_->RouterTopKBackward(this->kDt, sel.data(), gates.data(), top.data(),
                                   dgates.data(), rows, slots, experts, dg.data());
    EXPECT_EQ(gsel.ToHost(), sel) << "the selection" << what;
    if (capacity > 0) EXPECT_NE(std::count(sel.begin(), sel.end(), T(-1)), 0) << "none dropped";
    ExpectClose(ggates.ToHost(), gates, Tol<T>::kElementwise, "RouterTopK gates" + what);
    ExpectClose(gtop.ToHost(), top, Tol<T>::kElementwise, "RouterTopK top" + what);
    ExpectClose(gdg.ToHost(), dg, Tol<T>::kReduction, "RouterTopKBackward" + what);
  }
}

// The dropout mask is the same function of (key, i) on both backends: bit for bit.
TYPED_TEST(CudaOps, DropoutKeep) {
  using T = TypeParam;
  const int64_t n = 1000003;
  for (double p : {0.05, 0.5}) {
    GpuArray<T> gkeep(this->gpu_, n);
    this->gpu_->DropoutKeep(this->kDt, 0x9E3779B97F4A7C15ull, p, n, gkeep.get());
    std::vector<T> keep(n);
    this->cpu_->DropoutKeep(this->kDt, 0x9E3779B97F4A7C15ull, p, n, keep.data());
    ExpectBitwiseEqual(gkeep.ToHost(), keep, "DropoutKeep p=" + std::to_string(p));
  }
}

// The router losses run the same double math (router_loss_math.h) on both sides; only the
// device's log may differ from the host's by an ulp, so element-wise tolerances apply.
TYPED_TEST(CudaOps, RouterLosses) {
  using T = TypeParam;
  // The benchmark router (groups {2, 2, 2}, one empty slot) and a ragged one {3, 1, 2} + 2.
  struct RouterCase {
    std::vector<int32_t> expert_group;
    int64_t slots;
  };
  for (const RouterCase& c : {RouterCase{{0, 0, 1, 1, 2, 2}, 7}, RouterCase{{0, 0, 0, 1, 2, 2}, 8}}) {
    const std::vector<int32_t>& expert_group = c.expert_group;
    const int64_t experts = 6, groups = 3, slots = c.slots;
    const int64_t rows = 4099, count = 5;
    const std::string what = " slots=" + std::to_string(slots);
    std::vector<T> probs = Uniform<T>(this->rng_, rows * slots, 0.01, 1.0);
    for (int64_t r = 0; r < rows; ++r) {  // rows of a softmax: sum to one
      T sum = 0;
      for (int64_t s = 0; s < slots; ++s) sum += probs[r * slots + s];
      for (int64_t s = 0; s < slots; ++s) probs[r * slots + s] /= sum;
    }
    std::vector<int32_t> labels = Ints(this->rng_, rows, -1, static_cast<int>(groups - 1));
    GpuArray<T> gprobs(this->gpu_, probs);
    GpuArray<int32_t> glabels(this->gpu_, labels), ggroup(this->gpu_, expert_group);
    GpuArray<T> gce(this->gpu_, rows), gdg(this->gpu_, rows * slots), gce2(this->gpu_, rows);
    this->gpu_->RouterGroupLoss(this->kDt, gprobs.get(), glabels.data(), ggroup.data(), rows,
                                slots, experts, groups, 0.1, 0.37, gce.get(), gdg.get());
    this->gpu_->RouterGroupLoss(this->kDt, gprobs.get(), glabels.data(), ggroup.data(), rows,
                                slots, experts, groups, 0.1, 0.37, gce2.get(), nullptr);
    std::vector<T> ce(rows), dg(rows * slots);
    this->cpu_->RouterGroupLoss(this->kDt, probs.data(), labels.data(), expert_group.data(), rows,
                                slots, experts, groups, 0.1, 0.37, ce.data(), dg.data());
    ExpectClose(gce.ToHost(), ce, Tol<T>::kElementwise, "RouterGroupLoss ce" + what);
    ExpectClose(gdg.ToHost(), dg, Tol<T>::kElementwise, "RouterGroupLoss dprobs" + what);
    ExpectBitwiseEqual(gce2.ToHost(), gce.ToHost(), "RouterGroupLoss without dprobs" + what);

    // Balance: `count` routers' slot masses, rows `slots + 2` apart.
    const int64_t stride = slots + 2;
    std::vector<T> mass = Uniform<T>(this->rng_, count * stride, 5.0, 50.0);
    GpuArray<T> gmass(this->gpu_, mass), gloss(this->gpu_, count), gdmass(this->gpu_, count * slots);
    this->gpu_->RouterBalanceLoss(this->kDt, gmass.get(), stride, ggroup.data(), count, slots,
                                  experts, groups, gloss.get(), gdmass.get());
    std::vector<T> loss(count), dmass(count * slots);
    this->cpu_->RouterBalanceLoss(this->kDt, mass.data(), stride, expert_group.data(), count,
                                  slots, experts, groups, loss.data(), dmass.data());
    ExpectClose(gloss.ToHost(), loss, Tol<T>::kElementwise, "RouterBalanceLoss loss" + what);
    ExpectClose(gdmass.ToHost(), dmass, Tol<T>::kElementwise, "RouterBalanceLoss dmass" + what);
  }
}

struct AttentionCase {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  // Key holes when reply_a > 0 (the shared-prompt layout): row b is
  // [prefix + b | reply A of reply_a | reply B], reply B's queries not seeing reply A.
  int64_t prefix = 0, reply_a = 0;

  std::string Describe() const {
    return " B=" + std::to_string(batch) + " T=" + std::to_string(seq) +
           " Hq=" + std::to_string(q_heads) + " Hkv=" + std::to_string(kv_heads) +
           " D=" + std::to_string(head_dim) +
           (reply_a > 0 ? " holes(prefix=" + std::to_string(prefix) +
                              ", A=" + std::to_string(reply_a) + ")"
                        : std::string());
  }
  // The key holes [batch * seq, 2] in host memory, or empty without holes.
  std::vector<int32_t> KeyHoles() const {
    std::vector<int32_t> holes;
    if (reply_a > 0) {
      holes.assign(2 * batch * seq, 0);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = prefix + b + reply_a; i < seq; ++i) {
          holes[2 * (b * seq + i)] = static_cast<int32_t>(prefix + b);
          holes[2 * (b * seq + i) + 1] = static_cast<int32_t>(prefix + b + reply_a);
        }
    }
    return holes;
  }
  // The shape; key_holes as AttentionShape::key_holes (null: plain causal).
  AttentionShape Shape(const int32_t* key_holes) const {
    AttentionShape shape;
    shape.batch = batch;
    shape.seq = seq;
    shape.q_heads = q_heads;
    shape.kv_heads = kv_heads;
    shape.head_dim = head_dim;
    shape.scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    shape.key_holes = key_holes;
    return shape;
  }
};

TYPED_TEST(CudaOps, Attention) {
  using T = TypeParam;
  const AttentionCase cases[] = {
      {2, 37, 4, 2, 24},  {1, 37, 6, 1, 64}, {2, 70, 4, 4, 128},
      {1, 70, 6, 2, 80},  {3, 1, 2, 1, 24},  {1, 32, 4, 2, 64},
      // Holes within one key tile, across tiles, and from the row's first key.
      {2, 37, 4, 2, 24, 3, 9}, {2, 150, 4, 2, 64, 20, 70}, {1, 70, 6, 2, 80, 0, 33},
  };
  for (const AttentionCase& c : cases) {
    const std::string what = c.Describe();
    const std::vector<int32_t> holes = c.KeyHoles();
    GpuArray<int32_t> gholes(this->gpu_, holes.empty() ? std::vector<int32_t>{0} : holes);
    const AttentionShape shape = c.Shape(holes.empty() ? nullptr : gholes.data());
    // The same holes, in host memory for the CPU backend.
    const AttentionShape cpu_shape = c.Shape(holes.empty() ? nullptr : holes.data());
    const int64_t q_size = c.batch * c.seq * c.q_heads * c.head_dim;
    const int64_t kv_size = c.batch * c.seq * c.kv_heads * c.head_dim;
    const int64_t lse_size = c.batch * c.q_heads * c.seq;
    // Scores of order a few units: a peaked but not one-hot softmax.
    std::vector<T> q = Uniform<T>(this->rng_, q_size, -2.0, 2.0);
    std::vector<T> k = Uniform<T>(this->rng_, kv_size, -2.0, 2.0);
    std::vector<T> v = Uniform<T>(this->rng_, kv_size);
    std::vector<T> dout = Uniform<T>(this->rng_, q_size);

    GpuArray<T> gq(this->gpu_, q), gk(this->gpu_, k), gv(this->gpu_, v), gdout(this->gpu_, dout);
    GpuArray<T> gout(this->gpu_, q_size), glse(this->gpu_, lse_size);
    this->gpu_->AttentionForward(this->kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(),
                                 glse.get());
    std::vector<T> out(q_size), lse(lse_size);
    this->cpu_->AttentionForward(this->kDt, cpu_shape, q.data(), k.data(), v.data(),
                                 out.data(), lse.data());
    ExpectClose(gout.ToHost(), out, Tol<T>::kReduction, "AttentionForward out" + what);
    ExpectClose(glse.ToHost(), lse, Tol<T>::kReduction, "AttentionForward lse" + what);

    // Backward from each backend's own forward results.
    GpuArray<T> gdq(this->gpu_, q_size), gdk(this->gpu_, kv_size), gdv(this->gpu_, kv_size);
    GpuArray<T> gdk2(this->gpu_, kv_size);
    GpuArray<T> gdq2(this->gpu_, q_size), gdv2(this->gpu_, kv_size);
    this->gpu_->AttentionBackward(this->kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(),
                                  glse.get(), gdout.get(), gdq.get(), gdk.get(), gdv.get());
    this->gpu_->AttentionBackward(this->kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(),
                                  glse.get(), gdout.get(), gdq2.get(), gdk2.get(), gdv2.get());
    std::vector<T> dq(q_size), dk(kv_size), dv(kv_size);
    this->cpu_->AttentionBackward(this->kDt, cpu_shape, q.data(), k.data(), v.data(),
                                  out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                                  dv.data());
    const std::vector<T> got_dk = gdk.ToHost();
    // dq = scale * sum_j P (dP - Delta) k_j and dk likewise with q: with T = 1 (P = 1,
    // dP = Delta) both are 0 up to the rounding of dP - Delta, on either backend; their
    // scale without that cancellation is scale * max|dout| * max|v| * max|k| (or |q|).
    const double cancel = shape.scale * MaxAbs(dout) * MaxAbs(v);
    ExpectClose(gdq.ToHost(), dq, Tol<T>::kReduction, "AttentionBackward dq" + what,
                cancel * MaxAbs(k));
    ExpectClose(got_dk, dk, Tol<T>::kReduction, "AttentionBackward dk" + what,
                cancel * MaxAbs(q));
    ExpectClose(gdv.ToHost(), dv, Tol<T>::kReduction, "AttentionBackward dv" + what);
    ExpectBitwiseEqual(gdk2.ToHost(), got_dk, "AttentionBackward dk run-to-run" + what);
    ExpectBitwiseEqual(gdq2.ToHost(), gdq.ToHost(), "AttentionBackward dq run-to-run" + what);
  }
}

// ---------------------------------------------------------------------------------------
// Type-specific and memory tests.

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    gpu_ = Gpu(&reason);
    if (gpu_ == nullptr) GTEST_SKIP() << "CUDA backend unavailable: " << reason;
    cpu_ = Cpu();
    ASSERT_NE(cpu_, nullptr);
  }
  Backend* gpu_ = nullptr;
  Backend* cpu_ = nullptr;
};

// CopyRows of T (gather, scatter, both, neither; copy and accumulate, strided columns)
// against the CPU, bit for bit: a copy moves the bits, an accumulation is one add per
// element (for Bf16 in f32, rounded once).
template <typename T>
void ExpectCopyRowsMatchesCpu(Backend* gpu, Backend* cpu, std::mt19937& rng) {
  const DType dt = DTypeOf<T>();
  const int64_t src_rows_count = 301, src_stride = 70, dst_rows_count = 257, dst_stride = 45;
  const int64_t n = 200, width = 33, src_col = 7, dst_col = 11;
  const std::vector<T> src = Uniform<T>(rng, src_rows_count * src_stride);
  const std::vector<T> base = Uniform<T>(rng, dst_rows_count * dst_stride);
  const std::vector<int32_t> src_rows = Ints(rng, n, 0, src_rows_count - 1);
  std::vector<int32_t> dst_rows(dst_rows_count);  // distinct: a shuffled prefix of 0..256
  std::iota(dst_rows.begin(), dst_rows.end(), 0);
  std::shuffle(dst_rows.begin(), dst_rows.end(), rng);
  dst_rows.resize(n);
  GpuArray<T> gsrc(gpu, src);
  GpuArray<int32_t> gsrc_rows(gpu, src_rows), gdst_rows(gpu, dst_rows);
  for (bool accumulate : {false, true}) {
    for (int maps = 0; maps < 4; ++maps) {
      const bool gather = maps & 1, scatter = maps & 2;
      std::vector<T> want = base;
      cpu->CopyRows(dt, src.data() + src_col, src_stride, gather ? src_rows.data() : nullptr,
                    want.data() + dst_col, dst_stride, scatter ? dst_rows.data() : nullptr, n,
                    width, accumulate);
      GpuArray<T> got(gpu, base);
      gpu->CopyRows(dt, gsrc.data() + src_col, src_stride, gather ? gsrc_rows.data() : nullptr,
                    got.data() + dst_col, dst_stride, scatter ? gdst_rows.data() : nullptr, n,
                    width, accumulate);
      ExpectBitwiseEqual(got.ToHost(), want,
                         std::string(DTypeName(dt)) + " CopyRows accumulate " +
                             std::to_string(accumulate) + " maps " + std::to_string(maps));
    }
  }
}

TYPED_TEST(CudaOps, CopyRowsMatchesCpuBitForBit) {
  ExpectCopyRowsMatchesCpu<TypeParam>(this->gpu_, this->cpu_, this->rng_);
}

// The experts' projections with the gates fused in (ExpertsDown, ExpertsUpBackward).
struct ExpertsCase {
  int64_t rows, k, d, blocks, width;
  int64_t offset = 0;  // elements x and dy start past their allocation (odd: unaligned)
  std::string Describe() const {
    return " rows=" + std::to_string(rows) + " k=" + std::to_string(k) +
           " d=" + std::to_string(d) + " blocks=" + std::to_string(blocks) +
           " width=" + std::to_string(width) + " offset=" + std::to_string(offset);
  }
};

// Both ops on the GPU against the CPU in the same type, with the gates and without (then
// h and dg are not written: they stay NaN on the GPU). h, hs and dh are GEMM outputs
// (tolerance Tol<T>::kReduction); dg is of AccumDType, dots of those products with h
// (Tol<Accum>::kReduction). The backward reads the CPU's h, so that it is checked alone.
template <typename T>
void ExpectExpertsMatchCpu(Backend* gpu, Backend* cpu, std::mt19937& rng, const ExpertsCase& c) {
  using A = std::conditional_t<std::is_same_v<T, Bf16>, float, T>;
  const DType dt = DTypeOf<T>();
  const int64_t cols = c.blocks * c.width;
  const std::vector<T> x = Uniform<T>(rng, c.offset + c.rows * c.k, -2.0, 2.0);
  const std::vector<T> a = Uniform<T>(rng, cols * c.k), b = Uniform<T>(rng, c.d * cols);
  const std::vector<T> g = Uniform<T>(rng, c.rows * c.blocks, 0.0, 1.0);
  const std::vector<T> dy = Uniform<T>(rng, c.offset + c.rows * c.d, -2.0, 2.0);
  GpuArray<T> gx(gpu, x), ga(gpu, a), gb(gpu, b), gg(gpu, g), gdy(gpu, dy);
  const auto all_nan = [](const auto& v) {
    return std::all_of(v.begin(), v.end(),
                       [](auto e) { return std::isnan(static_cast<double>(e)); });
  };
  for (bool gated : {true, false}) {
    const std::string what = std::string(" ") + DTypeName(dt) + (gated ? " gated" : " plain") +
                             c.Describe();
    GpuArray<T> gh(gpu, c.rows * cols), ghs(gpu, c.rows * cols);
    gpu->ExpertsDown(dt, gx.data() + c.offset, ga.get(), gated ? gg.get() : nullptr, c.rows, c.k,
                     c.blocks, c.width, 0.6, gated ? gh.get() : nullptr, ghs.get());
    std::vector<T> h(c.rows * cols), hs(c.rows * cols);
    cpu->ExpertsDown(dt, x.data() + c.offset, a.data(), gated ? g.data() : nullptr, c.rows, c.k,
                     c.blocks, c.width, 0.6, gated ? h.data() : nullptr, hs.data());
    ExpectClose(ghs.ToHost(), hs, Tol<T>::kReduction, "ExpertsDown hs" + what);
    if (gated) {
      ExpectClose(gh.ToHost(), h, Tol<T>::kReduction, "ExpertsDown h" + what);
    } else {
      EXPECT_TRUE(all_nan(gh.ToHost())) << "ExpertsDown wrote h" << what;
    }

    GpuArray<T> gh_in(gpu, gated ? h : hs);
    GpuArray<A> gdg(gpu, c.rows * c.blocks);
    GpuArray<T> gdh(gpu, c.rows * cols);
    gpu->ExpertsUpBackward(dt, gdy.data() + c.offset, gb.get(), gated ? gh_in.get() : nullptr,
                           gated ? gg.get() : nullptr, c.rows, c.d, c.blocks, c.width, 0.6,
                           gated ? gdg.get() : nullptr, gdh.get());
    std::vector<A> dg(c.rows * c.blocks);
    std::vector<T> dh(c.rows * cols);
    cpu->ExpertsUpBackward(dt, dy.data() + c.offset, b.data(), gated ? h.data() : nullptr,
                           gated ? g.data() : nullptr, c.rows, c.d, c.blocks, c.width, 0.6,
                           gated ? dg.data() : nullptr, dh.data());
    ExpectClose(gdh.ToHost(), dh, Tol<T>::kReduction, "ExpertsUpBackward dh" + what);
    if (gated) {
      ExpectClose(gdg.ToHost(), dg, Tol<A>::kReduction, "ExpertsUpBackward dg" + what);
    } else {
      EXPECT_TRUE(all_nan(gdg.ToHost())) << "ExpertsUpBackward wrote dg" << what;
    }
  }
}

// f32 and f64: the GEMM (cuBLASLt) and the epilogue kernel.
TYPED_TEST(CudaOps, Experts) {
  for (const ExpertsCase& c : {ExpertsCase{37, 45, 29, 3, 5}, ExpertsCase{64, 64, 48, 6, 8}}) {
    ExpectExpertsMatchCpu<TypeParam>(this->gpu_, this->cpu_, this->rng_, c);
  }
}

// Every pair of floating types, on values that exercise rounding: ties, subnormals of
// f16, overflow, infinities, signed zeros, NaN.
TEST_F(CudaBackendTest, ConvertMatchesCpuBitForBit) {
  std::mt19937 rng(7);
  std::vector<double> values = {0.0,     -0.0,    1.0,      -2.5,     65504.0,  65520.0,
                                1e6,     -1e6,    6e-8,     3e-8,     1e-5,     -7e-6,
                                1.0 + 0x1p-8, 1.0 + 0x1p-11, 1.0 + 3 * 0x1p-11, 3.0e38,
                                std::numeric_limits<double>::infinity(),
                                -std::numeric_limits<double>::infinity(),
                                std::numeric_limits<double>::quiet_NaN(), 1e300, -1e-300};
  std::uniform_real_distribution<double> dist(-4.0, 4.0);
  for (int i = 0; i < 2000; ++i) values.push_back(std::ldexp(dist(rng), i % 40 - 30));
  const int64_t n = static_cast<int64_t>(values.size());
  const DType types[] = {DType::kF64, DType::kF32, DType::kBF16, DType::kF16};

  for (DType src_dt : types) {
    // The source values in src_dt, produced by the CPU from f64.
    std::vector<unsigned char> src(n * DTypeSize(src_dt));
    cpu_->Convert(DType::kF64, values.data(), src_dt, src.data(), n);
    void* gsrc = gpu_->Allocate(src.size());
    gpu_->CopyFromHost(gsrc, src.data(), src.size());
    for (DType dst_dt : types) {
      const size_t bytes = n * DTypeSize(dst_dt);
      std::vector<unsigned char> want(bytes), got(bytes);
      cpu_->Convert(src_dt, src.data(), dst_dt, want.data(), n);
      void* gdst = gpu_->Allocate(bytes);
      gpu_->Convert(src_dt, gsrc, dst_dt, gdst, n);
      gpu_->CopyToHost(got.data(), gdst, bytes);
      gpu_->Free(gdst);
      // NaN payloads may differ (the GPU's f64 -> f32 makes the canonical NaN): compare
      // those as "both NaN", everything else bit for bit, via the values in f64.
      std::vector<double> got_f64(n), want_f64(n);
      cpu_->Convert(dst_dt, got.data(), DType::kF64, got_f64.data(), n);
      cpu_->Convert(dst_dt, want.data(), DType::kF64, want_f64.data(), n);
      int64_t bad = 0, first = -1;
      for (int64_t i = 0; i < n; ++i) {
        const size_t w = DTypeSize(dst_dt);
        const bool ok = std::isnan(want_f64[i])
                            ? std::isnan(got_f64[i])
                            : std::memcmp(&got[i * w], &want[i * w], w) == 0;
        if (!ok) {
          ++bad;
          if (first < 0) first = i;
        }
      }
      EXPECT_EQ(bad, 0) << "Convert " << DTypeName(src_dt) << " -> " << DTypeName(dst_dt)
                        << ": " << bad << " of " << n << " differ; first: value "
                        << (first >= 0 ? values[first] : 0.0) << " gpu "
                        << (first >= 0 ? got_f64[first] : 0.0) << " cpu "
                        << (first >= 0 ? want_f64[first] : 0.0);
    }
    gpu_->Free(gsrc);
  }
}

TEST_F(CudaBackendTest, FillsSixteenBitTypes) {
  const int64_t n = 1001;
  for (DType dt : {DType::kBF16, DType::kF16}) {
    void* g = gpu_->Allocate(n * 2);
    gpu_->Fill(dt, g, -1.25, n);
    std::vector<uint16_t> got(n);
    gpu_->CopyToHost(got.data(), g, n * 2);
    gpu_->Free(g);
    const uint16_t want = dt == DType::kBF16 ? F32ToBf16(-1.25f) : F32ToF16(-1.25f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], want) << DTypeName(dt) << " at " << i;
  }
}

TEST_F(CudaBackendTest, MemoryAndCopies) {
  void* empty = gpu_->Allocate(0);
  EXPECT_NE(empty, nullptr);
  gpu_->Free(empty);
  gpu_->Free(nullptr);
  // Far beyond any GPU: nullptr, and the backend keeps working.
  EXPECT_EQ(gpu_->Allocate(size_t{1} << 50), nullptr);

  std::vector<float> host(12345);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f;
  void* a = gpu_->Allocate(host.size() * sizeof(float));
  void* b = gpu_->Allocate(host.size() * sizeof(float));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  gpu_->CopyFromHost(a, host.data(), host.size() * sizeof(float));
  gpu_->CopyOnDevice(b, a, host.size() * sizeof(float));
  gpu_->Scale(DType::kF32, 2.0, b, static_cast<int64_t>(host.size()));
  gpu_->Synchronize();
  std::vector<float> back(host.size());
  gpu_->CopyToHost(back.data(), b, back.size() * sizeof(float));
  for (size_t i = 0; i < host.size(); ++i) ASSERT_EQ(back[i], host[i] * 2.0f) << i;
  gpu_->Free(a);
  gpu_->Free(b);
}

// The pool's counters follow Allocate and Free: in_use grows by at least each block's
// size (the pool rounds up), drops again on Free while the peak stays, reserved covers
// in_use (the freed blocks stay cached), and ResetPeakMemory brings the peak to in_use.
TEST_F(CudaBackendTest, MemoryStatsFollowTheCachingPool) {
  PMOL_SKIP_IF_EMULATED("The stream-ordered pool");
  gpu_->Synchronize();
  const MemoryStats start = gpu_->GetMemoryStats();
  EXPECT_GE(start.peak_in_use_bytes, start.in_use_bytes);
  EXPECT_GE(start.reserved_bytes, start.in_use_bytes);
  const size_t sizes[3] = {size_t{3} << 20, size_t{5} << 20, 12345};
  void* blocks[3];
  for (int i = 0; i < 3; ++i) {
    blocks[i] = gpu_->Allocate(sizes[i]);
    ASSERT_NE(blocks[i], nullptr);
  }
  gpu_->Synchronize();
  const MemoryStats held = gpu_->GetMemoryStats();
  const int64_t total = static_cast<int64_t>(sizes[0] + sizes[1] + sizes[2]);
  EXPECT_GE(held.in_use_bytes, start.in_use_bytes + total);
  EXPECT_GE(held.peak_in_use_bytes, held.in_use_bytes);
  EXPECT_GE(held.reserved_bytes, held.in_use_bytes);

  gpu_->Free(blocks[1]);
  gpu_->Synchronize();
  const MemoryStats freed = gpu_->GetMemoryStats();
  EXPECT_LE(freed.in_use_bytes, held.in_use_bytes - static_cast<int64_t>(sizes[1]));
  EXPECT_GE(freed.in_use_bytes, start.in_use_bytes + total - static_cast<int64_t>(sizes[1]));
  EXPECT_GE(freed.peak_in_use_bytes, held.in_use_bytes) << "Free lowered the peak";
  // Cached, not released: the freed block is still reserved.
  EXPECT_GE(freed.reserved_bytes, held.in_use_bytes);

  gpu_->ResetPeakMemory();
  const MemoryStats reset = gpu_->GetMemoryStats();
  EXPECT_EQ(reset.in_use_bytes, freed.in_use_bytes);
  EXPECT_EQ(reset.peak_in_use_bytes, reset.in_use_bytes);

  gpu_->Free(blocks[0]);
  gpu_->Free(blocks[2]);
  gpu_->Synchronize();
  const MemoryStats end = gpu_->GetMemoryStats();
  EXPECT_EQ(end.in_use_bytes, start.in_use_bytes);
  EXPECT_EQ(end.peak_in_use_bytes, reset.in_use_bytes);
}

// ReleaseCachedMemory returns cached blocks to the driver: a freed 256 MiB block stays
// reserved (release threshold: never) until then, and is no longer reserved after it.
TEST_F(CudaBackendTest, ReleaseCachedMemoryReturnsFreedBlocks) {
  PMOL_SKIP_IF_EMULATED("The stream-ordered pool");
  constexpr int64_t kBytes = int64_t{256} << 20;
  void* big = gpu_->Allocate(kBytes);
  ASSERT_NE(big, nullptr);
  gpu_->Free(big);
  gpu_->Synchronize();
  const MemoryStats cached = gpu_->GetMemoryStats();
  EXPECT_GE(cached.reserved_bytes, cached.in_use_bytes + kBytes)
      << "the freed block is not cached";
  gpu_->ReleaseCachedMemory();
  const MemoryStats released = gpu_->GetMemoryStats();
  EXPECT_EQ(released.in_use_bytes, cached.in_use_bytes);
  EXPECT_GE(released.reserved_bytes, released.in_use_bytes);
  EXPECT_LE(released.reserved_bytes, cached.reserved_bytes - kBytes / 2) << "the block was not returned";
}

// ---------------------------------------------------------------------------------------
// bf16 mixed precision (kernels/backend.h): each op with dt = bf16 on both backends, on the
// same bf16 inputs; tolerances in the file comment. A backward takes the CPU forward's
// outputs on both sides, so that it is compared on identical inputs.

class CudaBf16Test : public CudaBackendTest {
 protected:
  static constexpr DType kDt = DType::kBF16;

  // GemmTo with bf16 A and B and C of type C (Bf16 or float), row-major storage with
  // padded leading dimensions, against the CPU backend.
  template <typename C>
  void ExpectGemmToMatches(int64_t m, int64_t n, int64_t k, bool ta, bool tb, double beta,
                           double tol) {
    const std::string what = std::string("bf16 GemmTo C=") + DTypeName(DTypeOf<C>()) +
                             " m=" + std::to_string(m) + " n=" + std::to_string(n) +
                             " k=" + std::to_string(k) + " ta=" + (ta ? "1" : "0") +
                             " tb=" + (tb ? "1" : "0") + " beta=" + std::to_string(beta);
    const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k;
    const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n;
    const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = n + 2;
    const std::vector<Bf16> a = Uniform<Bf16>(rng_, a_rows * lda);
    const std::vector<Bf16> b = Uniform<Bf16>(rng_, b_rows * ldb);
    std::vector<C> c = Uniform<C>(rng_, m * ldc);
    std::vector<C> c_gpu_init = c;
    if (beta == 0.0) {  // C is not read when beta = 0, even if it holds NaN
      for (C& v : c_gpu_init) v = std::numeric_limits<float>::quiet_NaN();
      for (C& v : c) v = 0.0f;
    }
    GpuArray<Bf16> ga(gpu_, a), gb(gpu_, b);
    GpuArray<C> gc(gpu_, c_gpu_init);
    gpu_->GemmTo(kDt, DTypeOf<C>(), ta, tb, m, n, k, 0.7, ga.get(), lda, gb.get(), ldb, beta,
                 gc.get(), ldc);
    cpu_->GemmTo(kDt, DTypeOf<C>(), ta, tb, m, n, k, 0.7, a.data(), lda, b.data(), ldb, beta,
                 c.data(), ldc);
    const std::vector<C> got = gc.ToHost();
    if (beta != 0.0) {  // the padding between rows must be left as it was
      ExpectClose(got, c, tol, what);
      return;
    }
    std::vector<C> got_block, want_block;  // the padding stays NaN on the GPU
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        got_block.push_back(got[i * ldc + j]);
        want_block.push_back(c[i * ldc + j]);
      }
    }
    ExpectClose(got_block, want_block, tol, what);
  }

  // k = 0: C = beta * C in the type of C, exactly (beta = 0.5), or zeros over NaN (beta = 0).
  template <typename C>
  void ExpectEmptyGemmToScalesC() {
    const std::string what = std::string("bf16 GemmTo k=0 C=") + DTypeName(DTypeOf<C>());
    const int64_t m = 5, n = 7;
    std::vector<C> c = Uniform<C>(rng_, m * n);
    GpuArray<C> gc(gpu_, c);
    gpu_->GemmTo(kDt, DTypeOf<C>(), false, false, m, n, 0, 1.0, nullptr, 1, nullptr, n, 0.5,
                 gc.get(), n);
    for (C& v : c) v = 0.5f * static_cast<float>(v);
    ExpectBitwiseEqual(gc.ToHost(), c, what + " beta=0.5");
    GpuArray<C> gzero(gpu_, m * n);  // NaN
    gpu_->GemmTo(kDt, DTypeOf<C>(), false, false, m, n, 0, 1.0, nullptr, 1, nullptr, n, 0.0,
                 gzero.get(), n);
    for (C& v : c) v = 0.0f;
    ExpectBitwiseEqual(gzero.ToHost(), c, what + " beta=0");
  }

  std::mt19937 rng_{20240612};
};

// Fill, Scale and AddBias are one f32 operation (or none) per element, rounded once: bit for
// bit. Axpy: the GPU's FMA against the CPU's multiply and add, then one rounding.
TEST_F(CudaBf16Test, FillScaleAxpyAddBias) {
  const int64_t rows = 37, cols = 61, n = rows * cols;
  const std::vector<Bf16> x = Uniform<Bf16>(rng_, n), y = Uniform<Bf16>(rng_, n);
  const std::vector<Bf16> bias = Uniform<Bf16>(rng_, cols);

  GpuArray<Bf16> filled(gpu_, n);
  gpu_->Fill(kDt, filled.get(), 0.3, n);
  std::vector<Bf16> want(n);
  cpu_->Fill(kDt, want.data(), 0.3, n);
  ExpectBitwiseEqual(filled.ToHost(), want, "bf16 Fill");

  GpuArray<Bf16> gx(gpu_, x);
  gpu_->Scale(kDt, -1.7, gx.get(), n);
  want = x;
  cpu_->Scale(kDt, -1.7, want.data(), n);
  ExpectBitwiseEqual(gx.ToHost(), want, "bf16 Scale");

  GpuArray<Bf16> gx2(gpu_, x), gy(gpu_, y);
  gpu_->Axpy(kDt, 0.7, gx2.get(), gy.get(), n);
  want = y;
  cpu_->Axpy(kDt, 0.7, x.data(), want.data(), n);
  ExpectClose(gy.ToHost(), want, Tol<Bf16>::kElementwise, "bf16 Axpy");

  GpuArray<Bf16> gy2(gpu_, y), gbias(gpu_, bias);
  gpu_->AddBias(kDt, gy2.get(), gbias.get(), rows, cols);
  want = y;
  cpu_->AddBias(kDt, want.data(), bias.data(), rows, cols);
  ExpectBitwiseEqual(gy2.ToHost(), want, "bf16 AddBias");
}

TEST_F(CudaBf16Test, SumRowsSmallAndMultiChunk) {
  for (int64_t rows : {1, 37, 1001}) {
    for (int64_t cols : {24, 61, 300}) {
      const std::vector<Bf16> dy = Uniform<Bf16>(rng_, rows * cols);
      std::vector<float> dbias = Uniform<float>(rng_, cols);  // f32 (AccumDType), added to
      GpuArray<Bf16> gdy(gpu_, dy);
      GpuArray<float> gdbias(gpu_, dbias);
      gpu_->SumRows(kDt, gdy.get(), rows, cols, gdbias.get());
      cpu_->SumRows(kDt, dy.data(), rows, cols, dbias.data());
      ExpectClose(gdbias.ToHost(), dbias, Tol<float>::kReduction,
                  "bf16 SumRows rows=" + std::to_string(rows) + " cols=" + std::to_string(cols));
    }
  }
}

// ScaleColumnBlocks: (alpha * s) * x in f32 on both sides, rounded once: bit for bit, also
// in place. ColumnBlockDots: f32 dots of bf16 rows (out is f32).
TEST_F(CudaBf16Test, ColumnBlocks) {
  const int64_t rows = 301, blocks = 6;
  for (int64_t width : {1, 8, 33}) {
    const std::string what = " width=" + std::to_string(width);
    const int64_t n = rows * blocks * width;
    const std::vector<Bf16> x = Uniform<Bf16>(rng_, n), y = Uniform<Bf16>(rng_, n);
    const std::vector<Bf16> scales = Uniform<Bf16>(rng_, rows * blocks);
    GpuArray<Bf16> gx(gpu_, x), gy(gpu_, y), gs(gpu_, scales);

    GpuArray<float> gdots(gpu_, rows * blocks);
    gpu_->ColumnBlockDots(kDt, gx.get(), gy.get(), rows, blocks, width, -1.3, gdots.get());
    std::vector<float> dots(rows * blocks);
    cpu_->ColumnBlockDots(kDt, x.data(), y.data(), rows, blocks, width, -1.3, dots.data());
    ExpectClose(gdots.ToHost(), dots, Tol<float>::kReduction, "bf16 ColumnBlockDots" + what);

    GpuArray<Bf16> gout(gpu_, n);
    gpu_->ScaleColumnBlocks(kDt, gx.get(), gs.get(), rows, blocks, width, 0.7, gout.get());
    std::vector<Bf16> want(n);
    cpu_->ScaleColumnBlocks(kDt, x.data(), scales.data(), rows, blocks, width, 0.7,
                            want.data());
    const std::vector<Bf16> got = gout.ToHost();
    ExpectBitwiseEqual(got, want, "bf16 ScaleColumnBlocks" + what);
    gpu_->ScaleColumnBlocks(kDt, gx.get(), gs.get(), rows, blocks, width, 0.7, gx.get());
    ExpectBitwiseEqual(gx.ToHost(), got, "bf16 ScaleColumnBlocks in place" + what);
  }
}

// bf16: with k and cols multiples of 8, cols <= 128 and x, a (dy, b) 16-byte aligned the
// tensor-core kernels run, which call no GEMM (the GEMM counters stay as they were); row
// tails (rows % 64), k tails (k % 64) and padded columns (48 -> 48, 24 -> 32, 128) are
// covered. Otherwise (width 5, an odd offset, 136 columns) cuBLASLt and the epilogue
// kernel.
TEST_F(CudaBf16Test, ExpertsOnTensorCoresOrThroughTheEpilogue) {
  const ExpertsCase tensor_core[] = {{130, 200, 72, 6, 8}, {64, 64, 64, 2, 8},
                                     {7, 24, 40, 3, 8},    {70, 136, 24, 4, 32},
                                     {1, 8, 8, 1, 16}};
  for (const ExpertsCase& c : tensor_core) {
    const cuda::GemmCounters before = GemmCountersOf(gpu_);
    ExpectExpertsMatchCpu<Bf16>(gpu_, cpu_, rng_, c);
    const cuda::GemmCounters now = GemmCountersOf(gpu_);
    EXPECT_EQ(now.lt_calls + now.cublas_fallbacks, before.lt_calls + before.cublas_fallbacks)
        << "a GEMM ran where the tensor-core kernels apply:" << c.Describe();
  }
  const ExpertsCase epilogue[] = {{37, 45, 29, 3, 5}, {50, 64, 64, 2, 8, 1}, {20, 64, 64, 17, 8}};
  for (const ExpertsCase& c : epilogue) {
    const cuda::GemmCounters before = GemmCountersOf(gpu_);
    ExpectExpertsMatchCpu<Bf16>(gpu_, cpu_, rng_, c);
    EXPECT_EQ(GemmCountersOf(gpu_).lt_calls + GemmCountersOf(gpu_).cublas_fallbacks,
              before.lt_calls + before.cublas_fallbacks + 4)
        << "the fallback should run one GEMM per op call:" << c.Describe();
  }
}

TEST_F(CudaBf16Test, CopyRowsMatchesCpuBitForBit) {
  ExpectCopyRowsMatchesCpu<Bf16>(gpu_, cpu_, rng_);
}

// The gather copies bits. The backward: each table row named gets its dout rows summed in
// f32 and is rounded once, on both backends; with distinct ids that is bit for bit, with
// repeated ids the sums run in different orders (the CPU in token order, the GPU over
// sorted runs of equal ids), so two bf16 ulps as for other reductions.
TEST_F(CudaBf16Test, Embedding) {
  const int64_t vocab = 1001, dim = 24;
  const std::vector<Bf16> table = Uniform<Bf16>(rng_, vocab * dim);
  GpuArray<Bf16> gtable(gpu_, table);
  std::vector<int32_t> distinct(vocab);
  std::iota(distinct.begin(), distinct.end(), 0);
  std::shuffle(distinct.begin(), distinct.end(), rng_);
  std::vector<int32_t> repeated = Ints(rng_, 4099, 0, 9);  // ids 0..9 often, others sometimes
  const std::vector<int32_t> far = Ints(rng_, repeated.size(), 0, vocab - 1);
  for (size_t i = 0; i < repeated.size(); i += 3) repeated[i] = far[i];

  for (const std::vector<int32_t>* ids : {&distinct, &repeated}) {
    const bool repeats = ids == &repeated;
    const int64_t n = static_cast<int64_t>(ids->size());
    const std::string what = repeats ? " (repeated ids)" : " (distinct ids)";
    GpuArray<int32_t> gids(gpu_, *ids);
    GpuArray<Bf16> gout(gpu_, n * dim);
    gpu_->EmbeddingForward(kDt, gtable.get(), gids.data(), n, dim, gout.get());
    std::vector<Bf16> out(n * dim);
    cpu_->EmbeddingForward(kDt, table.data(), ids->data(), n, dim, out.data());
    ExpectBitwiseEqual(gout.ToHost(), out, "bf16 EmbeddingForward" + what);

    const std::vector<Bf16> dout = Uniform<Bf16>(rng_, n * dim);
    const std::vector<Bf16> dtable0 = Uniform<Bf16>(rng_, vocab * dim);  // accumulated into
    GpuArray<Bf16> gdout(gpu_, dout), gdtable(gpu_, dtable0), gdtable2(gpu_, dtable0);
    gpu_->EmbeddingBackward(kDt, kDt, gdout.get(), gids.data(), n, dim, gdtable.get());
    gpu_->EmbeddingBackward(kDt, kDt, gdout.get(), gids.data(), n, dim, gdtable2.get());
    const std::vector<Bf16> got = gdtable.ToHost();
    ExpectBitwiseEqual(gdtable2.ToHost(), got, "bf16 EmbeddingBackward run-to-run" + what);
    std::vector<Bf16> dtable = dtable0;
    cpu_->EmbeddingBackward(kDt, kDt, dout.data(), ids->data(), n, dim, dtable.data());
    if (repeats) {
      ExpectClose(got, dtable, Tol<Bf16>::kReduction, "bf16 EmbeddingBackward" + what);
    } else {
      ExpectBitwiseEqual(got, dtable, "bf16 EmbeddingBackward" + what);
    }
    // Into an f32 table (the weight gradient of full fine-tuning): f32 sums, no rounding
    // to bf16; with distinct ids each element is one f32 add on both backends.
    const std::vector<float> ftable0 = Uniform<float>(rng_, vocab * dim);
    GpuArray<float> gftable(gpu_, ftable0);
    gpu_->EmbeddingBackward(kDt, DType::kF32, gdout.get(), gids.data(), n, dim, gftable.get());
    std::vector<float> ftable = ftable0;
    cpu_->EmbeddingBackward(kDt, DType::kF32, dout.data(), ids->data(), n, dim, ftable.data());
    if (repeats) {
      ExpectClose(gftable.ToHost(), ftable, Tol<float>::kReduction,
                  "bf16 EmbeddingBackward into f32" + what);
    } else {
      ExpectBitwiseEqual(gftable.ToHost(), ftable, "bf16 EmbeddingBackward into f32" + what);
    }
  }
}

TEST_F(CudaBf16Test, RmsNorm) {
  const double eps = 1e-5;
  for (int64_t rows : {37, 1001}) {
    for (int64_t dim : {24, 64, 1001}) {
      const std::string what = " rows=" + std::to_string(rows) + " dim=" + std::to_string(dim);
      const std::vector<Bf16> x = Uniform<Bf16>(rng_, rows * dim, -2.0, 2.0);
      const std::vector<Bf16> w = Uniform<Bf16>(rng_, dim, 0.5, 1.5);
      const std::vector<Bf16> dy = Uniform<Bf16>(rng_, rows * dim);
      std::vector<float> dw = Uniform<float>(rng_, dim);  // f32 (AccumDType), added to

      GpuArray<Bf16> gx(gpu_, x), gw(gpu_, w), gdy(gpu_, dy), gy(gpu_, rows * dim);
      GpuArray<float> gr(gpu_, rows);
      gpu_->RmsNormForward(kDt, gx.get(), nullptr, gw.get(), eps, rows, dim, nullptr, gy.get(),
                           gr.get());
      std::vector<Bf16> y(rows * dim);
      std::vector<float> r(rows);
      cpu_->RmsNormForward(kDt, x.data(), nullptr, w.data(), eps, rows, dim, nullptr, y.data(),
                           r.data());
      ExpectClose(gy.ToHost(), y, Tol<Bf16>::kReduction, "bf16 RmsNormForward y" + what);
      ExpectClose(gr.ToHost(), r, Tol<float>::kReduction, "bf16 RmsNormForward inv_rms" + what);

      // Backward from the CPU's inv_rms on both sides.
      GpuArray<float> gr_cpu(gpu_, r);
      GpuArray<Bf16> gdx(gpu_, rows * dim), gdx2(gpu_, rows * dim);
      GpuArray<float> gdw(gpu_, dw);
      gpu_->RmsNormBackward(kDt, gx.get(), gw.get(), gr_cpu.get(), gdy.get(), nullptr, rows,
                            dim, gdx.get(), gdw.get());
      gpu_->RmsNormBackward(kDt, gx.get(), gw.get(), gr_cpu.get(), gdy.get(), nullptr, rows,
                            dim, gdx2.get(), nullptr);
      std::vector<Bf16> dx(rows * dim);
      cpu_->RmsNormBackward(kDt, x.data(), w.data(), r.data(), dy.data(), nullptr, rows, dim,
                            dx.data(), dw.data());
      const std::vector<Bf16> got_dx = gdx.ToHost();
      ExpectClose(got_dx, dx, Tol<Bf16>::kReduction, "bf16 RmsNormBackward dx" + what);
      ExpectClose(gdw.ToHost(), dw, Tol<float>::kReduction, "bf16 RmsNormBackward dw" + what);
      ExpectBitwiseEqual(gdx2.ToHost(), got_dx, "bf16 RmsNormBackward without dw" + what);

      // The residual add fused in: the bf16 sum_out is the same f32 add rounded once on
      // both backends (bit-identical), and bit for bit this backend's Axpy + unfused
      // forward; the backward (one rounding, not the unfused pair's two) against the CPU's,
      // from the CPU's sum and inv_rms; sum_out = x and dx = residual_grad in place.
      const std::vector<Bf16> res = Uniform<Bf16>(rng_, rows * dim);
      const std::vector<Bf16> dres = Uniform<Bf16>(rng_, rows * dim);
      std::vector<float> fdw = Uniform<float>(rng_, dim);  // f32 (AccumDType), added to
      GpuArray<Bf16> gres(gpu_, res), gdres(gpu_, dres), gs(gpu_, rows * dim),
          gfy(gpu_, rows * dim);
      GpuArray<float> gfr(gpu_, rows);
      gpu_->RmsNormForward(kDt, gx.get(), gres.get(), gw.get(), eps, rows, dim, gs.get(),
                           gfy.get(), gfr.get());
      std::vector<Bf16> s(rows * dim), fy(rows * dim);
      std::vector<float> fr(rows);
      cpu_->RmsNormForward(kDt, x.data(), res.data(), w.data(), eps, rows, dim, s.data(),
                           fy.data(), fr.data());
      const std::vector<Bf16> got_s = gs.ToHost(), got_fy = gfy.ToHost();
      const std::vector<float> got_fr = gfr.ToHost();
      ExpectBitwiseEqual(got_s, s, "bf16 fused RmsNormForward sum_out" + what);
      ExpectClose(got_fy, fy, Tol<Bf16>::kReduction, "bf16 fused RmsNormForward y" + what);
      ExpectClose(got_fr, fr, Tol<float>::kReduction, "bf16 fused RmsNormForward inv_rms" + what);
      GpuArray<Bf16> gu(gpu_, x), guy(gpu_, rows * dim);
      GpuArray<float> gur(gpu_, rows);
      gpu_->Axpy(kDt, 1.0, gres.get(), gu.get(), rows * dim);
      gpu_->RmsNormForward(kDt, gu.get(), nullptr, gw.get(), eps, rows, dim, nullptr, guy.get(),
                           gur.get());
      ExpectBitwiseEqual(gu.ToHost(), got_s, "bf16 fused vs unfused sum" + what);
      ExpectBitwiseEqual(guy.ToHost(), got_fy, "bf16 fused vs unfused y" + what);
      ExpectBitwiseEqual(gur.ToHost(), got_fr, "bf16 fused vs unfused inv_rms" + what);
      GpuArray<Bf16> gxi(gpu_, x), gyi(gpu_, rows * dim);
      GpuArray<float> gri(gpu_, rows);
      gpu_->RmsNormForward(kDt, gxi.get(), gres.get(), gw.get(), eps, rows, dim, gxi.get(),
                           gyi.get(), gri.get());
      ExpectBitwiseEqual(gxi.ToHost(), got_s, "bf16 fused sum_out = x" + what);
      ExpectBitwiseEqual(gyi.ToHost(), got_fy, "bf16 fused y, sum_out = x" + what);
      ExpectBitwiseEqual(gri.ToHost(), got_fr, "bf16 fused inv_rms, sum_out = x" + what);

      GpuArray<Bf16> gs_cpu(gpu_, s), gfdx(gpu_, rows * dim);
      GpuArray<float> gfdw(gpu_, fdw);
      GpuArray<float> gfr_cpu(gpu_, fr);
      gpu_->RmsNormBackward(kDt, gs_cpu.get(), gw.get(), gfr_cpu.get(), gdy.get(), gdres.get(),
                            rows, dim, gfdx.get(), gfdw.get());
      std::vector<Bf16> fdx(rows * dim);
      cpu_->RmsNormBackward(kDt, s.data(), w.data(), fr.data(), dy.data(), dres.data(), rows,
                            dim, fdx.data(), fdw.data());
      const std::vector<Bf16> got_fdx = gfdx.ToHost();
      ExpectClose(got_fdx, fdx, Tol<Bf16>::kReduction, "bf16 fused RmsNormBackward dx" + what);
      ExpectClose(gfdw.ToHost(), fdw, Tol<float>::kReduction,
                  "bf16 fused RmsNormBackward dw" + what);
      GpuArray<Bf16> gdxi(gpu_, dres);
      gpu_->RmsNormBackward(kDt, gs_cpu.get(), gw.get(), gfr_cpu.get(), gdy.get(), gdxi.get(),
                            rows, dim, gdxi.get(), nullptr);
      ExpectBitwiseEqual(gdxi.ToHost(), got_fdx, "bf16 fused dx = residual_grad" + what);
    }
  }
}

// bf16 x, f32 cos/sin tables (AccumDType).
TEST_F(CudaBf16Test, Rope) {
  const int64_t tokens = 37, heads = 6, max_pos = 100;
  for (int64_t head_dim : {24, 64}) {
    const int64_t half = head_dim / 2;
    std::vector<float> cos(max_pos * half), sin(max_pos * half);
    for (int64_t p = 0; p < max_pos; ++p) {
      for (int64_t j = 0; j < half; ++j) {
        const double angle = p * std::pow(10000.0, -2.0 * j / head_dim);
        cos[p * half + j] = static_cast<float>(std::cos(angle));
        sin[p * half + j] = static_cast<float>(std::sin(angle));
      }
    }
    const std::vector<int32_t> positions = Ints(rng_, tokens, 0, max_pos - 1);
    const std::vector<Bf16> x = Uniform<Bf16>(rng_, tokens * heads * head_dim);
    GpuArray<float> gcos(gpu_, cos), gsin(gpu_, sin);
    GpuArray<int32_t> gpos(gpu_, positions);
    for (bool inverse : {false, true}) {
      const std::string what =
          "bf16 ApplyRope d=" + std::to_string(head_dim) + (inverse ? " inverse" : "");
      GpuArray<Bf16> gx(gpu_, x);
      gpu_->ApplyRope(kDt, gx.get(), tokens, heads, head_dim, gcos.get(), gsin.get(),
                      gpos.data(), inverse);
      std::vector<Bf16> want = x;
      cpu_->ApplyRope(kDt, want.data(), tokens, heads, head_dim, cos.data(), sin.data(),
                      positions.data(), inverse);
      ExpectClose(gx.ToHost(), want, Tol<Bf16>::kElementwise, what);
    }
  }
}

TEST_F(CudaBf16Test, SwiGlu) {
  const int64_t n = 1001;
  const std::vector<Bf16> gate = Uniform<Bf16>(rng_, n, -8.0, 8.0);
  const std::vector<Bf16> up = Uniform<Bf16>(rng_, n, -2.0, 2.0);
  const std::vector<Bf16> dout = Uniform<Bf16>(rng_, n);
  GpuArray<Bf16> ggate(gpu_, gate), gup(gpu_, up), gdout(gpu_, dout);
  GpuArray<Bf16> gout(gpu_, n), gdgate(gpu_, n), gdup(gpu_, n);
  gpu_->SwiGluForward(kDt, ggate.get(), gup.get(), gout.get(), n);
  gpu_->SwiGluBackward(kDt, ggate.get(), gup.get(), gdout.get(), gdgate.get(), gdup.get(), n);
  std::vector<Bf16> out(n), dgate(n), dup(n);
  cpu_->SwiGluForward(kDt, gate.data(), up.data(), out.data(), n);
  cpu_->SwiGluBackward(kDt, gate.data(), up.data(), dout.data(), dgate.data(), dup.data(), n);
  ExpectClose(gout.ToHost(), out, Tol<Bf16>::kElementwise, "bf16 SwiGluForward");
  ExpectClose(gdgate.ToHost(), dgate, Tol<Bf16>::kElementwise, "bf16 SwiGluBackward dgate");
  ExpectClose(gdup.ToHost(), dup, Tol<Bf16>::kElementwise, "bf16 SwiGluBackward dup");
}

// bf16 logits and dlogits; logp, lse and dlogp f32. The backward runs on the CPU's lse, out
// of place and in place (dlogits = logits; the same bits).
TEST_F(CudaBf16Test, LogSoftmaxGather) {
  const int64_t rows = 37;
  for (int64_t vocab : {1001, 32001}) {
    const std::string what = " vocab=" + std::to_string(vocab);
    const std::vector<Bf16> logits = Uniform<Bf16>(rng_, rows * vocab, -6.0, 6.0);
    std::vector<int32_t> targets = Ints(rng_, rows, 0, static_cast<int32_t>(vocab - 1));
    targets[3] = -1;  // ignored rows
    targets[20] = -100;
    const std::vector<float> dlogp = Uniform<float>(rng_, rows);
    GpuArray<Bf16> glogits(gpu_, logits);
    GpuArray<int32_t> gtargets(gpu_, targets);
    GpuArray<float> glogp(gpu_, rows), glse(gpu_, rows), gdlogp(gpu_, dlogp);
    gpu_->LogSoftmaxGather(kDt, glogits.get(), gtargets.data(), rows, vocab, glogp.get(),
                           glse.get());
    std::vector<float> logp(rows), lse(rows);
    cpu_->LogSoftmaxGather(kDt, logits.data(), targets.data(), rows, vocab, logp.data(),
                           lse.data());
    const std::vector<float> got_logp = glogp.ToHost();
    ExpectClose(got_logp, logp, Tol<float>::kReduction, "bf16 LogSoftmaxGather logp" + what);
    ExpectClose(glse.ToHost(), lse, Tol<float>::kReduction, "bf16 LogSoftmaxGather lse" + what);
    EXPECT_EQ(got_logp[3], 0.0f);
    EXPECT_EQ(got_logp[20], 0.0f);

    GpuArray<float> glse_cpu(gpu_, lse);
    GpuArray<Bf16> gdlogits(gpu_, rows * vocab), ginplace(gpu_, logits);
    gpu_->LogSoftmaxGatherBackward(kDt, glogits.get(), gtargets.data(), glse_cpu.get(),
                                   gdlogp.get(), rows, vocab, gdlogits.get());
    gpu_->LogSoftmaxGatherBackward(kDt, ginplace.get(), gtargets.data(), glse_cpu.get(),
                                   gdlogp.get(), rows, vocab, ginplace.get());
    std::vector<Bf16> dlogits(rows * vocab);
    cpu_->LogSoftmaxGatherBackward(kDt, logits.data(), targets.data(), lse.data(), dlogp.data(),
                                   rows, vocab, dlogits.data());
    const std::vector<Bf16> got = gdlogits.ToHost();
    ExpectClose(got, dlogits, Tol<Bf16>::kReduction, "bf16 LogSoftmaxGatherBackward" + what);
    ExpectBitwiseEqual(ginplace.ToHost(), got, "bf16 LogSoftmaxGatherBackward in place" + what);
  }
}

// bf16 q, k, v, out, dout, dq, dk, dv; f32 lse. head_dim other than 32/64/128 runs the
// scalar kernels (f32 tiles in shared memory, so head_dim 256 is accepted as in f32):
// against the CPU bf16 backend, the backward on the CPU forward's out and lse.
TEST_F(CudaBf16Test, AttentionScalarKernels) {
  const AttentionCase cases[] = {
      {2, 37, 4, 2, 24}, {1, 70, 6, 2, 80}, {1, 40, 2, 1, 256}, {3, 1, 2, 1, 24},
      {2, 37, 4, 2, 24, 3, 9}, {1, 70, 6, 2, 80, 0, 33},
  };
  for (const AttentionCase& c : cases) {
    const std::string what = c.Describe();
    const std::vector<int32_t> holes = c.KeyHoles();
    GpuArray<int32_t> gholes(gpu_, holes.empty() ? std::vector<int32_t>{0} : holes);
    const AttentionShape shape = c.Shape(holes.empty() ? nullptr : gholes.data());
    const AttentionShape cpu_shape = c.Shape(holes.empty() ? nullptr : holes.data());
    const int64_t q_size = c.batch * c.seq * c.q_heads * c.head_dim;
    const int64_t kv_size = c.batch * c.seq * c.kv_heads * c.head_dim;
    const int64_t lse_size = c.batch * c.q_heads * c.seq;
    const std::vector<Bf16> q = Uniform<Bf16>(rng_, q_size, -2.0, 2.0);
    const std::vector<Bf16> k = Uniform<Bf16>(rng_, kv_size, -2.0, 2.0);
    const std::vector<Bf16> v = Uniform<Bf16>(rng_, kv_size);
    const std::vector<Bf16> dout = Uniform<Bf16>(rng_, q_size);

    GpuArray<Bf16> gq(gpu_, q), gk(gpu_, k), gv(gpu_, v), gdout(gpu_, dout);
    GpuArray<Bf16> gout(gpu_, q_size);
    GpuArray<float> glse(gpu_, lse_size);
    gpu_->AttentionForward(kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(), glse.get());
    std::vector<Bf16> out(q_size);
    std::vector<float> lse(lse_size);
    cpu_->AttentionForward(kDt, cpu_shape, q.data(), k.data(), v.data(), out.data(), lse.data());
    ExpectClose(gout.ToHost(), out, Tol<Bf16>::kReduction, "bf16 AttentionForward out" + what);
    ExpectClose(glse.ToHost(), lse, Tol<float>::kReduction, "bf16 AttentionForward lse" + what);

    GpuArray<Bf16> gout_cpu(gpu_, out);
    GpuArray<float> glse_cpu(gpu_, lse);
    GpuArray<Bf16> gdq(gpu_, q_size), gdk(gpu_, kv_size), gdv(gpu_, kv_size);
    GpuArray<Bf16> gdq2(gpu_, q_size), gdk2(gpu_, kv_size), gdv2(gpu_, kv_size);
    gpu_->AttentionBackward(kDt, shape, gq.get(), gk.get(), gv.get(), gout_cpu.get(),
                            glse_cpu.get(), gdout.get(), gdq.get(), gdk.get(), gdv.get());
    gpu_->AttentionBackward(kDt, shape, gq.get(), gk.get(), gv.get(), gout_cpu.get(),
                            glse_cpu.get(), gdout.get(), gdq2.get(), gdk2.get(), gdv2.get());
    std::vector<Bf16> dq(q_size), dk(kv_size), dv(kv_size);
    cpu_->AttentionBackward(kDt, cpu_shape, q.data(), k.data(), v.data(), out.data(),
                            lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    const std::vector<Bf16> got_dq = gdq.ToHost(), got_dk = gdk.ToHost();
    ExpectClose(got_dq, dq, Tol<Bf16>::kReduction, "bf16 AttentionBackward dq" + what);
    ExpectClose(got_dk, dk, Tol<Bf16>::kReduction, "bf16 AttentionBackward dk" + what);
    ExpectClose(gdv.ToHost(), dv, Tol<Bf16>::kReduction, "bf16 AttentionBackward dv" + what);
    ExpectBitwiseEqual(gdq2.ToHost(), got_dq, "bf16 AttentionBackward dq run-to-run" + what);
    ExpectBitwiseEqual(gdk2.ToHost(), got_dk, "bf16 AttentionBackward dk run-to-run" + what);
  }
}

// bf16 with head_dim 32, 64 or 128 runs on tensor cores (kernels/cuda/attention_mma*),
// which also round P and dS to bf16 before their products, as FlashAttention does. The
// oracle is the CPU backend in f64 on the same (widened) bf16 inputs, the backward from
// the f64 forward; the GPU backward runs on the GPU's own out and lse, as in training.
// Tolerance per tensor: |gpu - f64| <= 1e-2 * max(max|f64|, 1e-4), the bound of
// tests/cuda/attention_mma_emulated_test.cc, where the same kernels under CPU emulation
// stay within 4.9e-3 (each output rounded to bf16: 2^-9 of its value; P and dS rounded:
// 2^-9 per term). lse within 1e-5 * max(1, |lse|) (exact bf16 products summed in f32).
// Each case prints its worst errors; the backward is deterministic run to run.
TEST_F(CudaBf16Test, AttentionOnTensorCores) {
  const AttentionCase cases[] = {
      {2, 37, 4, 2, 64},   {2, 70, 4, 4, 128}, {1, 32, 4, 2, 64},   {3, 1, 2, 1, 64},
      {2, 150, 4, 2, 64, 20, 70},              {2, 200, 2, 1, 32, 10, 150},
      {1, 300, 14, 2, 64},                     {1, 1024, 14, 2, 64, 100, 400},
      {2, 130, 4, 1, 128, 5, 60},
  };
  const auto widen = [](const std::vector<Bf16>& x) {
    return std::vector<double>(x.begin(), x.end());
  };
  const auto expect_within = [](const auto& got, const std::vector<double>& want,
                                const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double max_ref = 1e-4;
    for (double w : want) max_ref = std::max(max_ref, std::fabs(w));
    double worst = 0.0;
    int64_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
      if (!(err <= 1e-2 * max_ref)) ++bad;
      worst = std::max(worst, err);
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size()
                      << " elements off; worst error " << worst << " against max|f64| "
                      << max_ref;
    std::cout << "[   INFO   ] " << what << ": worst error " << worst / max_ref
              << " of max|f64|\n";
  };
  for (const AttentionCase& c : cases) {
    const std::string what = c.Describe();
    const std::vector<int32_t> holes = c.KeyHoles();
    GpuArray<int32_t> gholes(gpu_, holes.empty() ? std::vector<int32_t>{0} : holes);
    const AttentionShape shape = c.Shape(holes.empty() ? nullptr : gholes.data());
    const AttentionShape cpu_shape = c.Shape(holes.empty() ? nullptr : holes.data());
    const int64_t q_size = c.batch * c.seq * c.q_heads * c.head_dim;
    const int64_t kv_size = c.batch * c.seq * c.kv_heads * c.head_dim;
    const int64_t lse_size = c.batch * c.q_heads * c.seq;
    const std::vector<Bf16> q = Uniform<Bf16>(rng_, q_size, -2.0, 2.0);
    const std::vector<Bf16> k = Uniform<Bf16>(rng_, kv_size, -2.0, 2.0);
    const std::vector<Bf16> v = Uniform<Bf16>(rng_, kv_size);
    const std::vector<Bf16> dout = Uniform<Bf16>(rng_, q_size);

    GpuArray<Bf16> gq(gpu_, q), gk(gpu_, k), gv(gpu_, v), gdout(gpu_, dout);
    GpuArray<Bf16> gout(gpu_, q_size);
    GpuArray<float> glse(gpu_, lse_size);
    gpu_->AttentionForward(kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(), glse.get());
    GpuArray<Bf16> gdq(gpu_, q_size), gdk(gpu_, kv_size), gdv(gpu_, kv_size);
    GpuArray<Bf16> gdq2(gpu_, q_size), gdk2(gpu_, kv_size), gdv2(gpu_, kv_size);
    gpu_->AttentionBackward(kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(), glse.get(),
                            gdout.get(), gdq.get(), gdk.get(), gdv.get());
    gpu_->AttentionBackward(kDt, shape, gq.get(), gk.get(), gv.get(), gout.get(), glse.get(),
                            gdout.get(), gdq2.get(), gdk2.get(), gdv2.get());

    const std::vector<double> q64 = widen(q), k64 = widen(k), v64 = widen(v),
                              dout64 = widen(dout);
    std::vector<double> out(q_size), lse(lse_size), dq(q_size), dk(kv_size), dv(kv_size);
    cpu_->AttentionForward(DType::kF64, cpu_shape, q64.data(), k64.data(), v64.data(),
                           out.data(), lse.data());
    cpu_->AttentionBackward(DType::kF64, cpu_shape, q64.data(), k64.data(), v64.data(),
                            out.data(), lse.data(), dout64.data(), dq.data(), dk.data(),
                            dv.data());
    expect_within(gout.ToHost(), out, "tensor-core AttentionForward out" + what);
    const std::vector<float> got_lse = glse.ToHost();
    int64_t bad_lse = 0;
    for (size_t i = 0; i < lse.size(); ++i) {
      if (!(std::fabs(got_lse[i] - lse[i]) <= 1e-5 * std::max(1.0, std::fabs(lse[i])))) ++bad_lse;
    }
    EXPECT_EQ(bad_lse, 0) << "tensor-core AttentionForward lse" << what;
    const std::vector<Bf16> got_dq = gdq.ToHost(), got_dk = gdk.ToHost();
    expect_within(got_dq, dq, "tensor-core AttentionBackward dq" + what);
    expect_within(got_dk, dk, "tensor-core AttentionBackward dk" + what);
    expect_within(gdv.ToHost(), dv, "tensor-core AttentionBackward dv" + what);
    ExpectBitwiseEqual(gdq2.ToHost(), got_dq, "tensor-core dq run-to-run" + what);
    ExpectBitwiseEqual(gdk2.ToHost(), got_dk, "tensor-core dk run-to-run" + what);
  }
}

// bf16 A and B; C of bf16 (tol: two bf16 ulps) or f32 (c_dt = AccumDType). With an f32 C
// only the f32 summation order differs (cuBLAS's tensor-core blocks against OpenBLAS; the
// bf16 products are exact in f32): ~sqrt(k) f32 ulps of partial sums of C's magnitude,
// plus at most one truncation per 16-deep tensor-core step, i.e. below 4e-6 of
// max(|C|, mean|C|) for k <= 1000, so 1e-5.
TEST_F(CudaBf16Test, GemmTo) {
  const cuda::GemmCounters before = GemmCountersOf(gpu_);
  struct Size {
    int64_t m, n, k;
  };
  for (const Size& size : {Size{37, 29, 45}, Size{33, 17, 1000}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (double beta : {0.0, 0.3}) {
          ExpectGemmToMatches<Bf16>(size.m, size.n, size.k, ta, tb, beta,
                                    Tol<Bf16>::kReduction);
          ExpectGemmToMatches<float>(size.m, size.n, size.k, ta, tb, beta, 1e-5);
        }
      }
    }
  }
  ExpectCublasLtRan(gpu_, before, "bf16 GemmTo");
}

// The bf16 linear layer's forward: GemmBias through cuBLASLt's bias epilogue (the bias
// added to the f32 products, one rounding) against the CPU's GemmBias (also one
// rounding): two bf16 ulps, as GemmTo's bf16 C. With every leading dimension a multiple
// of 8 elements (16 bytes), as a model's layers have, the epilogue must be the path taken;
// the odd first size must only be right (cuBLASLt may lack an epilogue kernel for it).
TEST_F(CudaBf16Test, GemmBiasUsesTheBiasEpilogue) {
  struct Size {
    int64_t m, n, k;
    bool aligned;
  };
  const cuda::GemmCounters before = GemmCountersOf(gpu_);
  for (const Size& size :
       {Size{37, 29, 45, false}, Size{64, 128, 896, true}, Size{33, 24, 1000, true}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const int64_t m = size.m, n = size.n, k = size.k;
        const std::string what = "bf16 GemmBias m=" + std::to_string(m) +
                                 " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                 " ta=" + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0");
        const auto ld = [&](int64_t cols) {
          return size.aligned ? (cols + 7) / 8 * 8 + 8 : cols + 3;
        };
        const int64_t lda = ld(ta ? m : k), ldb = ld(tb ? k : n);
        const std::vector<Bf16> a = Uniform<Bf16>(rng_, (ta ? k : m) * lda);
        const std::vector<Bf16> b = Uniform<Bf16>(rng_, (tb ? n : k) * ldb);
        const std::vector<Bf16> bias = Uniform<Bf16>(rng_, n);
        std::vector<Bf16> c(m * n);
        GpuArray<Bf16> ga(gpu_, a), gb(gpu_, b), gbias(gpu_, bias);
        GpuArray<Bf16> gc(gpu_, m * n);
        const int64_t epilogues = GemmCountersOf(gpu_).lt_bias_calls;
        gpu_->GemmBias(kDt, ta, tb, m, n, k, ga.get(), lda, gb.get(), ldb, gbias.get(),
                       gc.get());
        if (size.aligned) {
          EXPECT_EQ(GemmCountersOf(gpu_).lt_bias_calls, epilogues + 1)
              << what << ": not run with the bias epilogue";
        }
        cpu_->GemmBias(kDt, ta, tb, m, n, k, a.data(), lda, b.data(), ldb, bias.data(),
                       c.data());
        ExpectClose(gc.ToHost(), c, Tol<Bf16>::kReduction, what);
      }
    }
  }
  const cuda::GemmCounters after = GemmCountersOf(gpu_);
  std::cout << "[   INFO   ] after the bf16 GemmBias calls: " << Describe(after) << "\n";
  EXPECT_EQ(after.lt_bias_calls - before.lt_bias_calls + after.bias_fallbacks -
                before.bias_fallbacks,
            12);
}

// Operands that start at odd element offsets (column slices, as the stacked experts'
// A and B blocks) and odd leading dimensions: each GEMM is planned for the alignment its
// pointers have (cuBLASLt assumes 256 bytes unless told), so it still runs right.
TEST_F(CudaBf16Test, GemmToAtUnalignedOffsets) {
  const int64_t m = 45, n = 38, k = 91;
  const cuda::GemmCounters before = GemmCountersOf(gpu_);
  for (int64_t offset : {1, 3, 8}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const std::string what = "bf16 GemmTo offset=" + std::to_string(offset) +
                                 " ta=" + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0");
        const int64_t lda = (ta ? m : k) + 2 * offset + 1, ldb = (tb ? k : n) + offset + 2,
                      ldc = n + offset + 3;
        const std::vector<Bf16> a = Uniform<Bf16>(rng_, (ta ? k : m) * lda + offset);
        const std::vector<Bf16> b = Uniform<Bf16>(rng_, (tb ? n : k) * ldb + offset);
        std::vector<Bf16> c = Uniform<Bf16>(rng_, m * ldc + offset);
        GpuArray<Bf16> ga(gpu_, a), gb(gpu_, b), gc(gpu_, c);
        const auto at = [offset](const GpuArray<Bf16>& x) {
          return static_cast<Bf16*>(x.get()) + offset;
        };
        gpu_->Gemm(kDt, ta, tb, m, n, k, 0.7, at(ga), lda, at(gb), ldb, 0.3, at(gc), ldc);
        cpu_->Gemm(kDt, ta, tb, m, n, k, 0.7, a.data() + offset, lda, b.data() + offset, ldb,
                   0.3, c.data() + offset, ldc);
        ExpectClose(gc.ToHost(), c, Tol<Bf16>::kReduction, what);  // the gaps untouched too
      }
    }
  }
  std::cout << "[   INFO   ] after the unaligned GEMMs: " << Describe(GemmCountersOf(gpu_))
            << "\n";
  ExpectCublasLtRan(gpu_, before, "bf16 GemmTo at unaligned offsets");
}

TEST_F(CudaBf16Test, GemmToWithEmptyInnerDimensionScalesC) {
  ExpectEmptyGemmToScalesC<Bf16>();
  ExpectEmptyGemmToScalesC<float>();
}

}  // namespace
}  // namespace pmol
