// The CUDA backend (kernels/cuda) against the CPU backend (kernels/cpu), op by op, on
// seeded random inputs with odd sizes (T = 37 and 70, head_dim 24/64/80/128, GQA 4/2 and
// 6/1, vocab 1001 and 32001, rows 1001 to force the multi-chunk reductions), in f32 and
// in f64. Outputs that an op overwrites start as NaN on the GPU, so an element the kernel
// forgets to write fails the comparison.
//
// Without a usable GPU (as on the build machines), CudaAvailability checks that asking
// for the CUDA backend is a clear FailedPrecondition naming the CUDA runtime's error, and
// every numeric test is skipped with that message.
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
//     reproduces kernels/dtype.h's rounding bit for bit; NaNs need only be NaN).
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
  return std::is_same_v<T, float> ? DType::kF32 : DType::kF64;
}

template <typename T>
struct Tol {
  static constexpr double kElementwise = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  static constexpr double kReduction = std::is_same_v<T, float> ? 1e-4 : 1e-10;
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
    if constexpr (std::is_floating_point_v<T>) {
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

template <typename T>
std::vector<T> Uniform(std::mt19937& rng, size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(dist(rng));
  return v;
}

std::vector<int32_t> Ints(std::mt19937& rng, size_t n, int32_t lo, int32_t hi_inclusive) {
  std::uniform_int_distribution<int32_t> dist(lo, hi_inclusive);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(rng);
  return v;
}

// |got - want| <= tol * max(|want|, mean |want|), element-wise (see the file comment).
template <typename T>
void ExpectClose(const std::vector<T>& got, const std::vector<T>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double floor = 0.0;
  for (T w : want) floor += std::fabs(static_cast<double>(w));
  floor = want.empty() ? 1.0 : floor / static_cast<double>(want.size());
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
    this->gpu_->EmbeddingBackward(this->kDt, gdout.get(), gids.data(), n, dim, gdtable.get());
    this->gpu_->EmbeddingBackward(this->kDt, gdout.get(), gids.data(), n, dim, gdtable2.get());
    this->cpu_->EmbeddingBackward(this->kDt, dout.data(), ids.data(), n, dim, dtable.data());
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
      this->gpu_->RmsNormForward(this->kDt, gx.get(), gw.get(), eps, rows, dim, gy.get(),
                                 gr.get());
      this->gpu_->RmsNormForward(this->kDt, gx.get(), gw.get(), eps, rows, dim, gy2.get(),
                                 nullptr);
      std::vector<T> y(rows * dim), r(rows);
      this->cpu_->RmsNormForward(this->kDt, x.data(), w.data(), eps, rows, dim, y.data(),
                                 r.data());
      ExpectClose(gy.ToHost(), y, Tol<T>::kReduction, "RmsNormForward y" + what);
      ExpectClose(gr.ToHost(), r, Tol<T>::kReduction, "RmsNormForward inv_rms" + what);
      ExpectBitwiseEqual(gy2.ToHost(), gy.ToHost(), "RmsNormForward without inv_rms" + what);

      // Backward from each backend's own inv_rms.
      GpuArray<T> gdx(this->gpu_, rows * dim), gdx2(this->gpu_, rows * dim);
      GpuArray<T> gdw(this->gpu_, dw);
      this->gpu_->RmsNormBackward(this->kDt, gx.get(), gw.get(), gr.get(), gdy.get(), rows, dim,
                                  gdx.get(), gdw.get());
      this->gpu_->RmsNormBackward(this->kDt, gx.get(), gw.get(), gr.get(), gdy.get(), rows, dim,
                                  gdx2.get(), nullptr);
      std::vector<T> dx(rows * dim);
      this->cpu_->RmsNormBackward(this->kDt, x.data(), w.data(), r.data(), dy.data(), rows, dim,
                                  dx.data(), dw.data());
      ExpectClose(gdx.ToHost(), dx, Tol<T>::kReduction, "RmsNormBackward dx" + what);
      ExpectClose(gdw.ToHost(), dw, Tol<T>::kReduction, "RmsNormBackward dw" + what);
      ExpectBitwiseEqual(gdx2.ToHost(), gdx.ToHost(), "RmsNormBackward without dw" + what);
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

struct AttentionCase {
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  // Key holes when reply_a > 0 (the shared-prompt layout): row b is
  // [prefix + b | reply A of reply_a | reply B], reply B's queries not seeing reply A.
  int64_t prefix = 0, reply_a = 0;
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
    const std::string what = " B=" + std::to_string(c.batch) + " T=" + std::to_string(c.seq) +
                             " Hq=" + std::to_string(c.q_heads) +
                             " Hkv=" + std::to_string(c.kv_heads) +
                             " D=" + std::to_string(c.head_dim) +
                             (c.reply_a > 0 ? " holes(prefix=" + std::to_string(c.prefix) +
                                                  ", A=" + std::to_string(c.reply_a) + ")"
                                            : std::string());
    std::vector<int32_t> holes;
    if (c.reply_a > 0) {
      holes.assign(2 * c.batch * c.seq, 0);
      for (int64_t b = 0; b < c.batch; ++b)
        for (int64_t i = c.prefix + b + c.reply_a; i < c.seq; ++i) {
          holes[2 * (b * c.seq + i)] = static_cast<int32_t>(c.prefix + b);
          holes[2 * (b * c.seq + i) + 1] = static_cast<int32_t>(c.prefix + b + c.reply_a);
        }
    }
    GpuArray<int32_t> gholes(this->gpu_, holes.empty() ? std::vector<int32_t>{0} : holes);
    AttentionShape shape;
    shape.batch = c.batch;
    shape.seq = c.seq;
    shape.q_heads = c.q_heads;
    shape.kv_heads = c.kv_heads;
    shape.head_dim = c.head_dim;
    shape.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    AttentionShape cpu_shape = shape;  // the same holes, in host memory for the CPU backend
    if (!holes.empty()) {
      shape.key_holes = static_cast<const int32_t*>(gholes.get());
      cpu_shape.key_holes = holes.data();
    }
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
    ExpectClose(gdq.ToHost(), dq, Tol<T>::kReduction, "AttentionBackward dq" + what);
    ExpectClose(got_dk, dk, Tol<T>::kReduction, "AttentionBackward dk" + what);
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

TYPED_TEST(CudaOps, CopyRowsMatchesCpuBitForBit) {
  using T = TypeParam;
  const int64_t src_rows_count = 301, src_stride = 70, dst_rows_count = 257, dst_stride = 45;
  const int64_t n = 200, width = 33, src_col = 7, dst_col = 11;
  const std::vector<T> src = Uniform<T>(this->rng_, src_rows_count * src_stride);
  const std::vector<T> base = Uniform<T>(this->rng_, dst_rows_count * dst_stride);
  const std::vector<int32_t> src_rows = Ints(this->rng_, n, 0, src_rows_count - 1);
  std::vector<int32_t> dst_rows(dst_rows_count);  // distinct: a shuffled prefix of 0..256
  std::iota(dst_rows.begin(), dst_rows.end(), 0);
  std::shuffle(dst_rows.begin(), dst_rows.end(), this->rng_);
  dst_rows.resize(n);
  GpuArray<T> gsrc(this->gpu_, src);
  GpuArray<int32_t> gsrc_rows(this->gpu_, src_rows), gdst_rows(this->gpu_, dst_rows);
  for (bool accumulate : {false, true}) {
    for (int maps = 0; maps < 4; ++maps) {
      const bool gather = maps & 1, scatter = maps & 2;
      std::vector<T> want = base;
      this->cpu_->CopyRows(this->kDt, src.data() + src_col, src_stride, gather ? src_rows.data() : nullptr,
                           want.data() + dst_col, dst_stride, scatter ? dst_rows.data() : nullptr, n, width,
                           accumulate);
      GpuArray<T> got(this->gpu_, base);
      this->gpu_->CopyRows(this->kDt, gsrc.data() + src_col, src_stride, gather ? gsrc_rows.data() : nullptr,
                           got.data() + dst_col, dst_stride, scatter ? gdst_rows.data() : nullptr, n, width,
                           accumulate);
      ExpectBitwiseEqual(got.ToHost(), want,
                         "CopyRows accumulate " + std::to_string(accumulate) + " maps " + std::to_string(maps));
    }
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

}  // namespace
}  // namespace pmol
