// Element-wise kernels: Fill (x = value), Axpy (y += alpha*x), Scale (x *= alpha) and
// AddBias (y[r, c] += bias[c]). Grid-stride loops over independent elements; nvcc fuses
// Axpy's multiply-add into one FMA (one rounding), so it may differ from a CPU result by
// one unit in the last place. Bf16 storage (Axpy, Scale, AddBias): each element is
// widened, computed in f32 and rounded once when stored; Fill of bf16 and f16 stores a
// bit pattern (uint16_t) rounded by the caller.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void FillKernel(T* x, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = value;
  }
}

template <typename T>
__global__ void AxpyKernel(Accum<T> alpha, const T* x, T* y, int64_t n) {
  using A = Accum<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = static_cast<A>(y[i]) + alpha * static_cast<A>(x[i]);
  }
}

template <typename T>
__global__ void ScaleKernel(Accum<T> alpha, T* x, int64_t n) {
  using A = Accum<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = static_cast<A>(x[i]) * alpha;
  }
}

template <typename T>
__global__ void AddBiasKernel(T* y, const T* bias, int64_t rows, int64_t cols) {
  using A = Accum<T>;
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = static_cast<A>(y[i]) + static_cast<A>(bias[i % cols]);
  }
}

}  // namespace

template <typename T>
void LaunchFill(T* x, T value, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  FillKernel<T><<<GridFor(n), kThreads, 0, stream>>>(x, value, n);
  PMOL_CUDA_CHECK_LAUNCH("FillKernel");
}

template <typename T>
void LaunchAxpy(Accum<T> alpha, const T* x, T* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  AxpyKernel<T><<<GridFor(n), kThreads, 0, stream>>>(alpha, x, y, n);
  PMOL_CUDA_CHECK_LAUNCH("AxpyKernel");
}

template <typename T>
void LaunchScale(Accum<T> alpha, T* x, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  ScaleKernel<T><<<GridFor(n), kThreads, 0, stream>>>(alpha, x, n);
  PMOL_CUDA_CHECK_LAUNCH("ScaleKernel");
}

template <typename T>
void LaunchAddBias(T* y, const T* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  AddBiasKernel<T><<<GridFor(rows * cols), kThreads, 0, stream>>>(y, bias, rows, cols);
  PMOL_CUDA_CHECK_LAUNCH("AddBiasKernel");
}

#define PMOL_INSTANTIATE(T)                                                            \
  template void LaunchAxpy<T>(Accum<T>, const T*, T*, int64_t, cudaStream_t);          \
  template void LaunchScale<T>(Accum<T>, T*, int64_t, cudaStream_t);                   \
  template void LaunchAddBias<T>(T*, const T*, int64_t, int64_t, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE
template void LaunchFill<float>(float*, float, int64_t, cudaStream_t);
template void LaunchFill<double>(double*, double, int64_t, cudaStream_t);
// Fill of 16-bit storage types (bf16, f16) by bit pattern.
template void LaunchFill<uint16_t>(uint16_t*, uint16_t, int64_t, cudaStream_t);

}  // namespace pmol::cuda
