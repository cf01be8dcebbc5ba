// PMoL's router losses on the GPU (backend.h RouterGroupLoss / RouterBalanceLoss): one
// thread per row (per router for the balance loss) in a grid-stride loop, each running the
// per-row math of kernels/router_loss_math.h that the CPU backend runs too. A router has a
// handful of slots, so a row is a few dozen flops; the group loss is one pass over
// probs [rows, slots] and the balance loss touches [count, slots].
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/router_loss_math.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void RouterGroupLossKernel(const T* probs, const int32_t* labels,
                                      const int32_t* expert_group, int64_t rows, int64_t slots,
                                      int64_t experts, int64_t groups, double eps, double scale,
                                      T* ce, T* dprobs) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += stride) {
    T* dg = dprobs != nullptr ? dprobs + r * slots : nullptr;
    ce[r] = static_cast<T>(RouterGroupLossOfRow(probs + r * slots, labels[r], expert_group, slots,
                                                experts, groups, eps, scale, dg));
  }
}

template <typename T>
__global__ void RouterBalanceLossKernel(const T* mass, int64_t mass_stride,
                                        const int32_t* expert_group, int64_t count, int64_t slots,
                                        int64_t experts, int64_t groups, T* loss, T* dmass) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < count;
       c += stride) {
    loss[c] = static_cast<T>(RouterBalanceLossOfMass(mass + c * mass_stride, expert_group, slots,
                                                     experts, groups, dmass + c * slots));
  }
}

}  // namespace

template <typename T>
void LaunchRouterGroupLoss(const T* probs, const int32_t* labels, const int32_t* expert_group,
                           int64_t rows, int64_t slots, int64_t experts, int64_t groups,
                           double label_smoothing, double grad_scale, T* ce, T* dprobs,
                           cudaStream_t stream) {
  if (rows <= 0) return;
  RouterGroupLossKernel<T><<<GridFor(rows), kThreads, 0, stream>>>(
      probs, labels, expert_group, rows, slots, experts, groups, label_smoothing, grad_scale, ce,
      dprobs);
  PMOL_CUDA_CHECK_LAUNCH("RouterGroupLossKernel");
}

template <typename T>
void LaunchRouterBalanceLoss(const T* mass, int64_t mass_stride, const int32_t* expert_group,
                             int64_t count, int64_t slots, int64_t experts, int64_t groups,
                             T* loss, T* dmass, cudaStream_t stream) {
  if (count <= 0) return;
  RouterBalanceLossKernel<T><<<GridFor(count), kThreads, 0, stream>>>(
      mass, mass_stride, expert_group, count, slots, experts, groups, loss, dmass);
  PMOL_CUDA_CHECK_LAUNCH("RouterBalanceLossKernel");
}

#define PMOL_INSTANTIATE(T)                                                                  \
  template void LaunchRouterGroupLoss<T>(const T*, const int32_t*, const int32_t*, int64_t,  \
                                         int64_t, int64_t, int64_t, double, double, T*, T*,  \
                                         cudaStream_t);                                      \
  template void LaunchRouterBalanceLoss<T>(const T*, int64_t, const int32_t*, int64_t,       \
                                           int64_t, int64_t, int64_t, T*, T*, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
