// Column-block scaling and dots (the expert scaling of stacked LoRA experts), math in
// kernels/backend.h. ScaleColumnBlocks: one thread per output element. ColumnBlockDots:
// one thread per (row, block), summing its `width` products in order (width is a LoRA
// rank, small), so results are deterministic.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void ScaleColumnBlocksKernel(const T* x, const T* s, int64_t rows, int64_t blocks,
                                        int64_t width, T alpha, T* out) {
  const int64_t cols = blocks * width, n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / cols, b = (i % cols) / width;
    out[i] = alpha * s[row * blocks + b] * x[i];
  }
}

template <typename T>
__global__ void ColumnBlockDotsKernel(const T* x, const T* y, int64_t rows, int64_t blocks,
                                      int64_t width, T alpha, T* out) {
  const int64_t n = rows * blocks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T* xi = x + i * width;
    const T* yi = y + i * width;
    T sum = 0;
    for (int64_t j = 0; j < width; ++j) sum += xi[j] * yi[j];
    out[i] = alpha * sum;
  }
}

}  // namespace

template <typename T>
void LaunchScaleColumnBlocks(const T* x, const T* s, int64_t rows, int64_t blocks,
                             int64_t width, T alpha, T* out, cudaStream_t stream) {
  const int64_t n = rows * blocks * width;
  if (n <= 0) return;
  ScaleColumnBlocksKernel<T><<<GridFor(n), kThreads, 0, stream>>>(x, s, rows, blocks, width,
                                                                  alpha, out);
  PMOL_CUDA_CHECK_LAUNCH("ScaleColumnBlocksKernel");
}

template <typename T>
void LaunchColumnBlockDots(const T* x, const T* y, int64_t rows, int64_t blocks, int64_t width,
                           T alpha, T* out, cudaStream_t stream) {
  const int64_t n = rows * blocks;
  if (n <= 0) return;
  ColumnBlockDotsKernel<T><<<GridFor(n), kThreads, 0, stream>>>(x, y, rows, blocks, width,
                                                                alpha, out);
  PMOL_CUDA_CHECK_LAUNCH("ColumnBlockDotsKernel");
}

#define PMOL_INSTANTIATE(T)                                                                    \
  template void LaunchScaleColumnBlocks<T>(const T*, const T*, int64_t, int64_t, int64_t, T, \
                                           T*, cudaStream_t);                                \
  template void LaunchColumnBlockDots<T>(const T*, const T*, int64_t, int64_t, int64_t, T,   \
                                         T*, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
