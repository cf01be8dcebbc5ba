// RMSNorm forward/backward on the CPU; see rmsnorm.h for the math. Sums are taken in
// double for f32 inputs, so a row's statistics do not depend on the width's rounding.
// The residual sum is rounded to T and stored before the norm reads it, exactly as a
// separate Axpy would leave it; the residual gradient is added to the norm's gradient
// after that is rounded to T, as a separate Axpy would. dw is reduced over rows
// column-by-column, so the result is the same for any number of threads.
#include "kernels/cpu/rmsnorm.h"

#include <cmath>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void RmsNormForward(const T* x, const T* residual, const T* w, T eps, int64_t rows, int64_t dim,
                    T* sum_out, T* y, T* inv_rms) {
  ParallelFor(rows, residual != nullptr ? 5 * dim : 3 * dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* sr = x + r * dim;  // the row to normalize
      double ss = 0.0;
      if (residual != nullptr) {
        const T* rr = residual + r * dim;
        T* out = sum_out + r * dim;
        for (int64_t c = 0; c < dim; ++c) {
          const T s = sr[c] + rr[c];
          out[c] = s;
          ss += static_cast<double>(s) * s;
        }
        sr = out;
      } else {
        for (int64_t c = 0; c < dim; ++c) ss += static_cast<double>(sr[c]) * sr[c];
      }
      T inv = static_cast<T>(1.0 / std::sqrt(ss / dim + static_cast<double>(eps)));
      if (inv_rms != nullptr) inv_rms[r] = inv;
      T* yr = y + r * dim;
      for (int64_t c = 0; c < dim; ++c) yr[c] = sr[c] * inv * w[c];
    }
  });
}

template <typename T>
void RmsNormBackward(const T* x, const T* w, const T* inv_rms, const T* dy,
                     const T* residual_grad, int64_t rows, int64_t dim, T* dx, T* dw) {
  ParallelFor(rows, residual_grad != nullptr ? 6 * dim : 5 * dim, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* xr = x + r * dim;
      const T* dyr = dy + r * dim;
      double dot = 0.0;  // sum_c x * w * dy
      for (int64_t c = 0; c < dim; ++c) dot += static_cast<double>(xr[c]) * w[c] * dyr[c];
      T inv = inv_rms[r];
      T coef = static_cast<T>(dot / dim) * inv * inv * inv;
      T* dxr = dx + r * dim;
      if (residual_grad == nullptr) {
        for (int64_t c = 0; c < dim; ++c) dxr[c] = inv * w[c] * dyr[c] - xr[c] * coef;
      } else {
        const T* gr = residual_grad + r * dim;
        for (int64_t c = 0; c < dim; ++c) {
          const T norm_grad = inv * w[c] * dyr[c] - xr[c] * coef;
          dxr[c] = norm_grad + gr[c];
        }
      }
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

#define PMOL_INSTANTIATE(T)                                                                  \
  template void RmsNormForward<T>(const T*, const T*, const T*, T, int64_t, int64_t, T*, T*, \
                                  T*);                                                       \
  template void RmsNormBackward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                   int64_t, T*, T*);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cpu
