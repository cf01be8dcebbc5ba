// RMSNorm, one block per row (x, y, dy: [rows, dim]; w: [dim]; inv_rms: [rows]):
//   forward:  r = 1 / sqrt(mean(x^2) + eps),  y = x * r * w   (r saved when asked)
//   backward: dx = r * w * dy - x * r^3 * mean(x * w * dy)
//             dw += sum_rows dy * x * r
// With the residual add fused in (residual, residual_grad not null):
//   forward:  s = x + residual, rounded to T and stored to sum_out, then normalized as x
//             is above, read back from sum_out (each thread re-reads only what it wrote);
//   backward: dx = (the dx above, rounded to Accum<T>) + residual_grad, by an add that
//             nvcc may not contract into the FMAs before it (so f32 and f64 give the bits
//             of the unfused kernel then Axpy), then rounded once to T.
// Row sums are block tree reductions in Accum<T> (fixed order). dw uses the deterministic
// two-stage column reduction of column_reduce.cuh: no atomics, reproducible bits.
// Bf16 storage (x, residual, w, sum_out, y, dy, residual_grad, dx): the math is in f32,
// inv_rms and dw (a parameter gradient) are f32, and each bf16 output (sum_out, y, dx)
// is rounded once.
#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

constexpr int kMaxRowThreads = 512;

template <typename T>
__global__ void RmsNormForwardKernel(const T* x, const T* residual, const T* w, Accum<T> eps,
                                     int64_t dim, T* sum_out, T* y, Accum<T>* inv_rms) {
  using A = Accum<T>;
  __shared__ A shared[kWarp];
  const int64_t row = blockIdx.x;
  const T* sr = x + row * dim;  // the row to normalize
  T* yr = y + row * dim;
  A sum_sq = A(0);
  if (residual != nullptr) {
    const T* rr = residual + row * dim;
    T* out = sum_out + row * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      T s;
      s = static_cast<A>(sr[c]) + static_cast<A>(rr[c]);  // rounded to T once
      out[c] = s;
      const A sc = s;
      sum_sq += sc * sc;
    }
    sr = out;
  } else {
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      const A xc = sr[c];
      sum_sq += xc * xc;
    }
  }
  sum_sq = BlockSum(sum_sq, shared);
  const A r = A(1) / sqrt(sum_sq / static_cast<A>(dim) + eps);
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    yr[c] = static_cast<A>(sr[c]) * r * static_cast<A>(w[c]);
  }
  if (inv_rms != nullptr && threadIdx.x == 0) inv_rms[row] = r;
}

// a + b, rounded; never contracted with the product that gave a.
__device__ __forceinline__ float AddRn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double AddRn(double a, double b) { return __dadd_rn(a, b); }

template <typename T>
__global__ void RmsNormBackwardKernel(const T* x, const T* w, const Accum<T>* inv_rms,
                                      const T* dy, const T* residual_grad, int64_t dim, T* dx) {
  using A = Accum<T>;
  __shared__ A shared[kWarp];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  const T* dyr = dy + row * dim;
  T* dxr = dx + row * dim;
  A dot = A(0);
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    dot += static_cast<A>(xr[c]) * static_cast<A>(w[c]) * static_cast<A>(dyr[c]);
  }
  dot = BlockSum(dot, shared);
  const A r = inv_rms[row];
  const A coef = r * r * r * dot / static_cast<A>(dim);
  const T* gr = residual_grad != nullptr ? residual_grad + row * dim : nullptr;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    A g = r * static_cast<A>(w[c]) * static_cast<A>(dyr[c]) - static_cast<A>(xr[c]) * coef;
    if (gr != nullptr) g = AddRn(g, static_cast<A>(gr[c]));
    dxr[c] = g;
  }
}

template <typename T>
struct WeightGradValue {
  const T* x;
  const T* dy;
  const Accum<T>* inv_rms;
  int64_t dim;
  __device__ Accum<T> operator()(int64_t r, int64_t c) const {
    using A = Accum<T>;
    return static_cast<A>(dy[r * dim + c]) * static_cast<A>(x[r * dim + c]) * inv_rms[r];
  }
};

int Threads(int64_t dim) {
  int threads = RowThreads(dim);
  return threads > kMaxRowThreads ? kMaxRowThreads : threads;
}

}  // namespace

template <typename T>
void LaunchRmsNormForward(const T* x, const T* residual, const T* w, double eps, int64_t rows,
                          int64_t dim, T* sum_out, T* y, Accum<T>* inv_rms, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  PMOL_CUDA_REQUIRE(rows <= 0x7fffffff, "RmsNorm: too many rows for one grid");
  PMOL_CUDA_REQUIRE(residual == nullptr || sum_out != nullptr,
                    "RmsNorm: a residual needs sum_out");
  RmsNormForwardKernel<T><<<static_cast<unsigned>(rows), Threads(dim), 0, stream>>>(
      x, residual, w, static_cast<Accum<T>>(eps), dim, sum_out, y, inv_rms);
  PMOL_CUDA_CHECK_LAUNCH("RmsNormForwardKernel");
}

size_t RmsNormBackwardScratchBytes(size_t accum_size, int64_t rows, int64_t dim) {
  return ColumnReduceScratchBytes(accum_size, rows, dim);
}

template <typename T>
void LaunchRmsNormBackward(const T* x, const T* w, const Accum<T>* inv_rms, const T* dy,
                           const T* residual_grad, int64_t rows, int64_t dim, T* dx,
                           Accum<T>* dw, void* scratch, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  PMOL_CUDA_REQUIRE(rows <= 0x7fffffff, "RmsNorm: too many rows for one grid");
  RmsNormBackwardKernel<T><<<static_cast<unsigned>(rows), Threads(dim), 0, stream>>>(
      x, w, inv_rms, dy, residual_grad, dim, dx);
  PMOL_CUDA_CHECK_LAUNCH("RmsNormBackwardKernel");
  if (dw != nullptr) {
    LaunchColumnReduce<T>(WeightGradValue<T>{x, dy, inv_rms, dim}, rows, dim, dw, scratch,
                          stream);
  }
}

#define PMOL_INSTANTIATE(T)                                                                 \
  template void LaunchRmsNormForward<T>(const T*, const T*, const T*, double, int64_t,      \
                                        int64_t, T*, T*, Accum<T>*, cudaStream_t);          \
  template void LaunchRmsNormBackward<T>(const T*, const T*, const Accum<T>*, const T*,     \
                                         const T*, int64_t, int64_t, T*, Accum<T>*, void*,  \
                                         cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
