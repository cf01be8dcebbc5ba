// Per-row, per-column-block ops on row-major [rows, blocks*width] matrices, the pieces
// of mixture-of-LoRA expert scaling (block b = expert b's rank-r slice):
//   ScaleColumnBlocks: out[n, b*w+j] = alpha * s[n, b] * x[n, b*w+j]   (out may be x)
//   ColumnBlockDots:   out[n, b]     = alpha * sum_j x[n, b*w+j] * y[n, b*w+j]
// With width 1 the first is the element-wise product of two matrices.
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

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_COLUMN_BLOCKS_H_
