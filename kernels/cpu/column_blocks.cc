// Column-block scaling and dots, and row copies, on the CPU; see column_blocks.h. Rows split over threads;
// each output element has one fixed summation order (deterministic for any thread count).
#include "kernels/cpu/column_blocks.h"

#include "kernels/dtype.h"

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void ScaleColumnBlocks(const T* x, const T* s, int64_t rows, int64_t blocks, int64_t width,
                       T alpha, T* out) {
  const int64_t cols = blocks * width;
  ParallelFor(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t b = 0; b < blocks; ++b) {
        const T scale = alpha * s[n * blocks + b];
        const T* xi = x + n * cols + b * width;
        T* oi = out + n * cols + b * width;
        for (int64_t j = 0; j < width; ++j) oi[j] = scale * xi[j];
      }
    }
  });
}

template <typename T>
void ColumnBlockDots(const T* x, const T* y, int64_t rows, int64_t blocks, int64_t width,
                     T alpha, T* out) {
  const int64_t cols = blocks * width;
  ParallelFor(rows, cols, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t b = 0; b < blocks; ++b) {
        const T* xi = x + n * cols + b * width;
        const T* yi = y + n * cols + b * width;
        T sum = 0;
        for (int64_t j = 0; j < width; ++j) sum += xi[j] * yi[j];
        out[n * blocks + b] = alpha * sum;
      }
    }
  });
}

template <typename T>
void CopyRows(const T* src, int64_t src_stride, const int32_t* src_rows, T* dst, int64_t dst_stride,
              const int32_t* dst_rows, int64_t n, int64_t width, bool accumulate) {
  ParallelFor(n, width, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* s = src + (src_rows ? src_rows[i] : i) * src_stride;
      T* d = dst + (dst_rows ? dst_rows[i] : i) * dst_stride;
      if (accumulate) {
        for (int64_t j = 0; j < width; ++j) d[j] += s[j];
      } else {
        for (int64_t j = 0; j < width; ++j) d[j] = s[j];
      }
    }
  });
}

#define PMOL_INSTANTIATE(T)                                                                  \
  template void ScaleColumnBlocks<T>(const T*, const T*, int64_t, int64_t, int64_t, T, T*); \
  template void ColumnBlockDots<T>(const T*, const T*, int64_t, int64_t, int64_t, T, T*);   \
  template void CopyRows<T>(const T*, int64_t, const int32_t*, T*, int64_t, const int32_t*,  \
                            int64_t, int64_t, bool);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE
// bf16 rows (mixed precision): a copy moves the bits; an accumulation adds in f32 and
// rounds once.
template void CopyRows<Bf16>(const Bf16*, int64_t, const int32_t*, Bf16*, int64_t, const int32_t*,
                             int64_t, int64_t, bool);

}  // namespace pmol::cpu
