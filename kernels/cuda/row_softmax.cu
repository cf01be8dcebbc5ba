// Softmax over each row of a [rows, cols] matrix, and its backward (backend.h):
//   y[r, j]  = exp(scale x[r, j] - m_r) / sum_i exp(scale x[r, i] - m_r),  m_r = max_i scale x[r, i]
//   dx[r, j] = scale y[r, j] (dy[r, j] - sum_i y[r, i] dy[r, i])
// One block per row, as log_softmax.cu; the max and the sums are block tree reductions
// (deterministic). In place (y == x, dx == dy) is safe: each element is read before the
// block's reduction barrier and written only after it.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

constexpr int kMaxRowThreads = 1024;

template <typename T>
__global__ void RowSoftmaxKernel(const T* x, int64_t cols, T scale, T* y) {
  __shared__ T shared[kWarp];
  const T* xr = x + blockIdx.x * cols;
  T* yr = y + blockIdx.x * cols;
  T m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = max(m, scale * xr[c]);
  m = BlockMax(m, shared);
  T sum = T(0);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += exp(scale * xr[c] - m);
  sum = BlockSum(sum, shared);
  const T inv = T(1) / sum;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = exp(scale * xr[c] - m) * inv;
}

template <typename T>
__global__ void RowSoftmaxBackwardKernel(const T* y, const T* dy, int64_t cols, T scale, T* dx) {
  __shared__ T shared[kWarp];
  const T* yr = y + blockIdx.x * cols;
  const T* dyr = dy + blockIdx.x * cols;
  T* dxr = dx + blockIdx.x * cols;
  T dot = T(0);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += yr[c] * dyr[c];
  dot = BlockSum(dot, shared);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dxr[c] = scale * yr[c] * (dyr[c] - dot);
}

int Threads(int64_t cols) {
  const int threads = RowThreads(cols);
  return threads > kMaxRowThreads ? kMaxRowThreads : threads;
}

}  // namespace

template <typename T>
void LaunchRowSoftmax(const T* x, int64_t rows, int64_t cols, T scale, T* y, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  PMOL_CUDA_REQUIRE(rows <= 0x7fffffff, "RowSoftmax: too many rows for one grid");
  RowSoftmaxKernel<T><<<static_cast<unsigned>(rows), Threads(cols), 0, stream>>>(x, cols, scale, y);
  PMOL_CUDA_CHECK_LAUNCH("RowSoftmaxKernel");
}

template <typename T>
void LaunchRowSoftmaxBackward(const T* y, const T* dy, int64_t rows, int64_t cols, T scale, T* dx,
                              cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  PMOL_CUDA_REQUIRE(rows <= 0x7fffffff, "RowSoftmaxBackward: too many rows for one grid");
  RowSoftmaxBackwardKernel<T><<<static_cast<unsigned>(rows), Threads(cols), 0, stream>>>(
      y, dy, cols, scale, dx);
  PMOL_CUDA_CHECK_LAUNCH("RowSoftmaxBackwardKernel");
}

#define PMOL_INSTANTIATE(T)                                                                   \
  template void LaunchRowSoftmax<T>(const T*, int64_t, int64_t, T, T*, cudaStream_t);         \
  template void LaunchRowSoftmaxBackward<T>(const T*, const T*, int64_t, int64_t, T, T*,      \
                                            cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
