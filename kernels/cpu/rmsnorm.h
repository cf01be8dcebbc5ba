// RMSNorm on the CPU, per row of width d (HF Llama semantics, eps inside the root), of
// s = x, or s = x + residual (stored to sum_out, then read back) when residual is given:
//   r = 1/sqrt(mean(s^2) + eps),  y = s * r * w
// Backward, with g = dy * w, and residual_grad (nullable) the gradient of the skip path:
//   dx = r * g - x * r^3 * mean(x * g) + residual_grad,   dw += sum_rows dy * x * r
#ifndef PMOL_KERNELS_CPU_RMSNORM_H_
#define PMOL_KERNELS_CPU_RMSNORM_H_

#include <cstdint>

namespace pmol::cpu {

// sum_out may be x (used only when residual is not null).
template <typename T>
void RmsNormForward(const T* x, const T* residual, const T* w, T eps, int64_t rows, int64_t dim,
                    T* sum_out, T* y, T* inv_rms);

// dx may be residual_grad.
template <typename T>
void RmsNormBackward(const T* x, const T* w, const T* inv_rms, const T* dy,
                     const T* residual_grad, int64_t rows, int64_t dim, T* dx, T* dw);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_RMSNORM_H_
