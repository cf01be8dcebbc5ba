// Top-k routing over a router's probabilities g [rows, slots] and its backward
// (backend.h; the same selection as kernels/cpu/router_topk.h):
//   the k largest g of a row (ties: the lower slot first) are selected (1, else 0);
//   top = their sum, added largest first; gates[e] = g[e] / top for selected e < experts;
//   backward: c = sum_e dgates[e] gates[e], dg[j] += selected[j] (dgates[j] or 0 - c) / top.
// One thread per row (a grid-stride loop): a router has few slots, and k passes over them
// pick the k largest.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void RouterTopKKernel(const T* probs, int64_t rows, int64_t slots, int64_t experts,
                                 int64_t k, T* selected, T* gates, T* top) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += stride) {
    const T* g = probs + r * slots;
    T* sel = selected + r * slots;
    for (int64_t j = 0; j < slots; ++j) sel[j] = T(0);
    T sum = T(0);
    for (int64_t pick = 0; pick < k; ++pick) {
      int64_t best = -1;
      for (int64_t j = 0; j < slots; ++j) {
        if (sel[j] != T(0)) continue;
        if (best < 0 || g[j] > g[best]) best = j;  // strict: a tie keeps the lower slot
      }
      sel[best] = T(1);
      sum += g[best];
    }
    top[r] = sum;
    for (int64_t e = 0; e < experts; ++e) {
      gates[r * experts + e] = sel[e] != T(0) ? g[e] / sum : T(0);
    }
  }
}

template <typename T>
__global__ void RouterTopKBackwardKernel(const T* selected, const T* gates, const T* top,
                                         const T* dgates, int64_t rows, int64_t slots,
                                         int64_t experts, T* dg) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += stride) {
    const T* dgk = dgates + r * experts;
    const T* gk = gates + r * experts;
    const T* sel = selected + r * slots;
    T centre = T(0);
    for (int64_t e = 0; e < experts; ++e) centre += dgk[e] * gk[e];
    for (int64_t j = 0; j < slots; ++j) {
      if (sel[j] == T(0)) continue;
      const T up = j < experts ? dgk[j] : T(0);
      dg[r * slots + j] += (up - centre) / top[r];
    }
  }
}

}  // namespace

template <typename T>
void LaunchRouterTopK(const T* probs, int64_t rows, int64_t slots, int64_t experts, int64_t k,
                      T* selected, T* gates, T* top, cudaStream_t stream) {
  if (rows <= 0) return;
  PMOL_CUDA_REQUIRE(k >= 0 && k <= slots && experts <= slots, "RouterTopK: k or experts > slots");
  RouterTopKKernel<T><<<GridFor(rows), kThreads, 0, stream>>>(probs, rows, slots, experts, k,
                                                             selected, gates, top);
  PMOL_CUDA_CHECK_LAUNCH("RouterTopKKernel");
}

template <typename T>
void LaunchRouterTopKBackward(const T* selected, const T* gates, const T* top, const T* dgates,
                              int64_t rows, int64_t slots, int64_t experts, T* dg,
                              cudaStream_t stream) {
  if (rows <= 0) return;
  RouterTopKBackwardKernel<T><<<GridFor(rows), kThreads, 0, stream>>>(selected, gates, top, dgates,
                                                                     rows, slots, experts, dg);
  PMOL_CUDA_CHECK_LAUNCH("RouterTopKBackwardKernel");
}

#define PMOL_INSTANTIATE(T)                                                                      \
  template void LaunchRouterTopK<T>(const T*, int64_t, int64_t, int64_t, int64_t, T*, T*, T*,   \
                                    cudaStream_t);                                              \
  template void LaunchRouterTopKBackward<T>(const T*, const T*, const T*, const T*, int64_t,    \
                                            int64_t, int64_t, T*, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
