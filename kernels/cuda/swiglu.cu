// SwiGLU MLP activation, element-wise:
//   out = silu(g) * u,  silu(g) = g * s,  s = sigmoid(g) = 1 / (1 + exp(-g))
//   dgate = dout * u * s * (1 + g * (1 - s)),  dup = dout * g * s
// exp is the accurate libdevice exp (no fast-math intrinsics). Bf16 storage: the math is
// in f32 and each output is rounded once.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
__device__ __forceinline__ T Sigmoid(T g) {
  return T(1) / (T(1) + exp(-g));
}

template <typename T>
__global__ void SwiGluForwardKernel(const T* gate, const T* up, T* out, int64_t n) {
  using A = Accum<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A g = gate[i];
    out[i] = g * Sigmoid(g) * static_cast<A>(up[i]);
  }
}

template <typename T>
__global__ void SwiGluBackwardKernel(const T* gate, const T* up, const T* dout, T* dgate,
                                     T* dup, int64_t n) {
  using A = Accum<T>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A g = gate[i];
    const A u = up[i];
    const A d = dout[i];
    const A s = Sigmoid(g);
    dgate[i] = d * u * s * (A(1) + g * (A(1) - s));
    dup[i] = d * g * s;
  }
}

}  // namespace

template <typename T>
void LaunchSwiGluForward(const T* gate, const T* up, T* out, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SwiGluForwardKernel<T><<<GridFor(n), kThreads, 0, stream>>>(gate, up, out, n);
  PMOL_CUDA_CHECK_LAUNCH("SwiGluForwardKernel");
}

template <typename T>
void LaunchSwiGluBackward(const T* gate, const T* up, const T* dout, T* dgate, T* dup,
                          int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  SwiGluBackwardKernel<T><<<GridFor(n), kThreads, 0, stream>>>(gate, up, dout, dgate, dup, n);
  PMOL_CUDA_CHECK_LAUNCH("SwiGluBackwardKernel");
}

#define PMOL_INSTANTIATE(T)                                                              \
  template void LaunchSwiGluForward<T>(const T*, const T*, T*, int64_t, cudaStream_t);   \
  template void LaunchSwiGluBackward<T>(const T*, const T*, const T*, T*, T*, int64_t,   \
                                        cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
