// RMSNorm forward/backward on the CPU; see rmsnorm.h for the math. Sums are taken in
// double for f32 inputs, so a row's statistics do not depend on the width's rounding.
// dw is reduced over rows column-by-column, so the result is the same for any number
// of threads.
#include "kernels/cpu/rmsnorm.h"

#include <cmath>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void RmsNormForward(const T* x, const T* w, T eps, int64_t rows, int64_t dim, T* y, T* inv_rms) {
  ParallelFor(rows, 3 * dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * dim;
      double ss = 0.0;
      for (int64_t c = 0; c < dim; ++c) ss += static_cast<double>(xr[c]) * xr[c];
      T inv = static_cast<T>(1.0 / std::sqrt(ss / dim + static_cast<double>(eps)));
      if (inv_rms != nullptr) inv_rms[r] = inv;
      T* yr = y + r * dim;
      for (int64_t c = 0; c < dim; ++c) yr[c] = xr[c] * inv * w[c];
    }
  });
}

template <typename T>
void RmsNormBackward(const T* x, const T* w, const T* inv_rms, const T* dy, int64_t rows,
                     int64_t dim, T* dx, T* dw) {
  ParallelFor(rows, 5 * dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * dim;
      const T* dyr = dy + r * dim;
      double dot = 0.0;  // sum_c x * w * dy
      for (int64_t c = 0; c < dim; ++c) dot += static_cast<double>(xr[c]) * w[c] * dyr[c];
      T inv = inv_rms[r];
      T coef = static_cast<T>(dot / dim) * inv * inv * inv;
      T* dxr = dx + r * dim;
      for (int64_t c = 0; c < dim; ++c) dxr[c] = inv * w[c] * dyr[c] - xr[c] * coef;
    }
  });
  if (dw == nullptr) return;
  ParallelFor(dim, 2 * rows, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      T acc = 0;
      for (int64_t r = 0; r < rows; ++r) acc += dy[r * dim + c] * x[r * dim + c] * inv_rms[r];
      dw[c] += acc;
    }
  });
}

template void RmsNormForward<float>(const float*, const float*, float, int64_t, int64_t, float*,
                                    float*);
template void RmsNormForward<double>(const double*, const double*, double, int64_t, int64_t,
                                     double*, double*);
template void RmsNormBackward<float>(const float*, const float*, const float*, const float*,
                                     int64_t, int64_t, float*, float*);
template void RmsNormBackward<double>(const double*, const double*, const double*, const double*,
                                      int64_t, int64_t, double*, double*);

}  // namespace pmol::cpu
