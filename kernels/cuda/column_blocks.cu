// Column-block scaling and dots (the expert scaling of stacked LoRA experts), and row
// copies (the packing of routed rows), math in kernels/backend.h. ScaleColumnBlocks and
// CopyRows: one thread per output element (CopyRows' destination rows are distinct, so
// its accumulation needs no atomics). ColumnBlockDots: one thread per (row, block),
// summing its `width` products in order (width is a LoRA rank, small), so results are
// deterministic. Bf16 storage: products and sums in f32, each bf16 output rounded once;
// the dots are f32 (AccumDType); CopyRows moves the bits, or adds in f32 and rounds once.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void ScaleColumnBlocksKernel(const T* x, const T* s, int64_t rows, int64_t blocks,
                                        int64_t width, Accum<T> alpha, T* out) {
  using A = Accum<T>;
  const int64_t cols = blocks * width, n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / cols, b = (i % cols) / width;
    out[i] = alpha * static_cast<A>(s[row * blocks + b]) * static_cast<A>(x[i]);
  }
}

template <typename T>
__global__ void ColumnBlockDotsKernel(const T* x, const T* y, int64_t rows, int64_t blocks,
                                      int64_t width, Accum<T> alpha, Accum<T>* out) {
  using A = Accum<T>;
  const int64_t n = rows * blocks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T* xi = x + i * width;
    const T* yi = y + i * width;
    A sum = 0;
    for (int64_t j = 0; j < width; ++j) sum += static_cast<A>(xi[j]) * static_cast<A>(yi[j]);
    out[i] = alpha * sum;
  }
}

template <typename T>
__global__ void CopyRowsKernel(const T* src, int64_t src_stride, const int32_t* src_rows, T* dst,
                               int64_t dst_stride, const int32_t* dst_rows, int64_t n,
                               int64_t width, bool accumulate) {
  using A = Accum<T>;
  const int64_t total = n * width;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < total;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = k / width, j = k % width;
    const T value = src[(src_rows ? src_rows[i] : i) * src_stride + j];
    T* d = dst + (dst_rows ? dst_rows[i] : i) * dst_stride + j;
    if (accumulate) {
      *d = static_cast<A>(*d) + static_cast<A>(value);
    } else {
      *d = value;
    }
  }
}

}  // namespace

template <typename T>
void LaunchCopyRows(const T* src, int64_t src_stride, const int32_t* src_rows, T* dst,
                    int64_t dst_stride, const int32_t* dst_rows, int64_t n, int64_t width,
                    bool accumulate, cudaStream_t stream) {
  const int64_t total = n * width;
  if (total <= 0) return;
  CopyRowsKernel<T><<<GridFor(total), kThreads, 0, stream>>>(src, src_stride, src_rows, dst,
                                                             dst_stride, dst_rows, n, width,
                                                             accumulate);
  PMOL_CUDA_CHECK_LAUNCH("CopyRowsKernel");
}

template <typename T>
void LaunchScaleColumnBlocks(const T* x, const T* s, int64_t rows, int64_t blocks,
                             int64_t width, Accum<T> alpha, T* out, cudaStream_t stream) {
  const int64_t n = rows * blocks * width;
  if (n <= 0) return;
  ScaleColumnBlocksKernel<T><<<GridFor(n), kThreads, 0, stream>>>(x, s, rows, blocks, width,
                                                                  alpha, out);
  PMOL_CUDA_CHECK_LAUNCH("ScaleColumnBlocksKernel");
}

template <typename T>
void LaunchColumnBlockDots(const T* x, const T* y, int64_t rows, int64_t blocks, int64_t width,
                           Accum<T> alpha, Accum<T>* out, cudaStream_t stream) {
  const int64_t n = rows * blocks;
  if (n <= 0) return;
  ColumnBlockDotsKernel<T><<<GridFor(n), kThreads, 0, stream>>>(x, y, rows, blocks, width,
                                                                alpha, out);
  PMOL_CUDA_CHECK_LAUNCH("ColumnBlockDotsKernel");
}

#define PMOL_INSTANTIATE(T)                                                                \
  template void LaunchScaleColumnBlocks<T>(const T*, const T*, int64_t, int64_t, int64_t,  \
                                           Accum<T>, T*, cudaStream_t);                    \
  template void LaunchColumnBlockDots<T>(const T*, const T*, int64_t, int64_t, int64_t,    \
                                         Accum<T>, Accum<T>*, cudaStream_t);               \
  template void LaunchCopyRows<T>(const T*, int64_t, const int32_t*, T*, int64_t,           \
                                  const int32_t*, int64_t, int64_t, bool, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
