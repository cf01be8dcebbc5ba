// Softmax over each row of a [rows, cols] matrix, and its backward (a router's
// probabilities from its logits):
//   y[r, j]  = exp(scale x[r, j] - m_r) / sum_i exp(scale x[r, i] - m_r),  m_r = max_i scale x[r, i]
//   dx[r, j] = scale y[r, j] (dy[r, j] - sum_i y[r, i] dy[r, i])
// Rows in parallel (parallel.h); each row in one pass order, so results do not depend on
// the thread count. y may be x and dx may be dy.
#ifndef PMOL_KERNELS_CPU_ROW_SOFTMAX_H_
#define PMOL_KERNELS_CPU_ROW_SOFTMAX_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void RowSoftmax(const T* x, int64_t rows, int64_t cols, T scale, T* y);

template <typename T>
void RowSoftmaxBackward(const T* y, const T* dy, int64_t rows, int64_t cols, T scale, T* dx);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_ROW_SOFTMAX_H_
