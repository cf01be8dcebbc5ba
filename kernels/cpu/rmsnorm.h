// RMSNorm on the CPU, per row of width d (HF Llama semantics, eps inside the root):
//   r = 1/sqrt(mean(x^2) + eps),  y = x * r * w
// Backward, with g = dy * w:
//   dx = r * g - x * r^3 * mean(x * g),   dw += sum_rows dy * x * r
#ifndef PMOL_KERNELS_CPU_RMSNORM_H_
#define PMOL_KERNELS_CPU_RMSNORM_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void RmsNormForward(const T* x, const T* w, T eps, int64_t rows, int64_t dim, T* y, T* inv_rms);

template <typename T>
void RmsNormBackward(const T* x, const T* w, const T* inv_rms, const T* dy, int64_t rows,
                     int64_t dim, T* dx, T* dw);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_RMSNORM_H_
