// Row softmax and its backward; see row_softmax.h.
#include "kernels/cpu/row_softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void RowSoftmax(const T* x, int64_t rows, int64_t cols, T scale, T* y) {
  ParallelFor(rows, 4 * cols, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < cols; ++j) m = std::max(m, scale * xr[j]);
      T sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += (yr[j] = std::exp(scale * xr[j] - m));
      const T inv = T(1) / sum;
      for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
}

template <typename T>
void RowSoftmaxBackward(const T* y, const T* dy, int64_t rows, int64_t cols, T scale, T* dx) {
  ParallelFor(rows, 3 * cols, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* yr = y + r * cols;
      const T* dyr = dy + r * cols;
      T* dxr = dx + r * cols;
      T dot = 0;
      for (int64_t j = 0; j < cols; ++j) dot += yr[j] * dyr[j];
      for (int64_t j = 0; j < cols; ++j) dxr[j] = scale * yr[j] * (dyr[j] - dot);
    }
  });
}

template void RowSoftmax<float>(const float*, int64_t, int64_t, float, float*);
template void RowSoftmax<double>(const double*, int64_t, int64_t, double, double*);
template void RowSoftmaxBackward<float>(const float*, const float*, int64_t, int64_t, float,
                                        float*);
template void RowSoftmaxBackward<double>(const double*, const double*, int64_t, int64_t, double,
                                         double*);

}  // namespace pmol::cpu
