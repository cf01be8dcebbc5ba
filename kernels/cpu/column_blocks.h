// Per-row, per-column-block ops on row-major [rows, blocks*width] matrices, the pieces
// of mixture-of-LoRA expert scaling (block b = expert b's rank-r slice):
//   ScaleColumnBlocks: out[n, b*w+j] = alpha * s[n, b] * x[n, b*w+j]   (out may be x)
//   ColumnBlockDots:   out[n, b]     = alpha * sum_j x[n, b*w+j] * y[n, b*w+j]
// With width 1 the first is the element-wise product of two matrices. And the row
// gather/scatter that packs routed rows for expert parallelism:
//   CopyRows:          dst[d_i, :width] (+)= src[s_i, :width], s_i = src_rows[i] or i,
//                      d_i = dst_rows[i] or i (strides in elements; d_i distinct);
//                      also for T = Bf16 (kernels/dtype.h), adding in f32
#ifndef PMOL_KERNELS_CPU_COLUMN_BLOCKS_H_
#define PMOL_KERNELS_CPU_COLUMN_BLOCKS_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void ScaleColumnBlocks(const T* x, const T* s, int64_t rows, int64_t blocks, int64_t width,
                       T alpha, T* out);
template <typename T>
void ColumnBlockDots(const T* x, const T* y, int64_t rows, int64_t blocks, int64_t width,
                     T alpha, T* out);

template <typename T>
void CopyRows(const T* src, int64_t src_stride, const int32_t* src_rows, T* dst, int64_t dst_stride,
              const int32_t* dst_rows, int64_t n, int64_t width, bool accumulate);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_COLUMN_BLOCKS_H_
