// Top-k routing over a router's probabilities g [rows, slots] and its backward
// (backend.h; the same selection as kernels/cpu/router_topk.h):
//   the k largest g of a row (ties: the lower slot first) are selected (1, else 0);
//   top = their sum, added largest first; gates[e] = g[e] / top for selected e < experts;
//   capacity C > 0: expert e keeps the first C rows that selected it; later ones are
//   dropped (selected -1, gate 0);
//   backward: c = sum_e dgates[e] gates[e],
//             dg[j] += [selected[j] != 0] (dgates[j] if routed expert, else 0, - c) / top.
// Selection: one thread per row (a grid-stride loop): a router has few slots, and k
// passes over them pick the k largest. Capacity: one block per expert, scanning its
// column in tiles of 1024 rows (cub::BlockScan) with the count carried across tiles.
#include <cub/block/block_scan.cuh>

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

constexpr int kScanThreads = 1024;

// Block e: rows that selected expert e after its first `capacity` are dropped.
template <typename T>
__global__ void RouterCapacityKernel(int64_t rows, int64_t slots, int64_t experts,
                                     int64_t capacity, T* selected, T* gates) {
  using Scan = cub::BlockScan<int, kScanThreads>;
  __shared__ typename Scan::TempStorage scratch;
  __shared__ int64_t taken;
  const int64_t e = blockIdx.x;
  if (threadIdx.x == 0) taken = 0;
  __syncthreads();
  for (int64_t base = 0; base < rows; base += kScanThreads) {
    const int64_t r = base + threadIdx.x;
    const int flag = r < rows && selected[r * slots + e] != T(0) ? 1 : 0;
    int before = 0, total = 0;
    Scan(scratch).ExclusiveSum(flag, before, total);
    if (flag && taken + before >= capacity) {
      selected[r * slots + e] = T(-1);
      gates[r * experts + e] = T(0);
    }
    __syncthreads();  // every thread has read `taken` and is done with the scratch
    if (threadIdx.x == 0) taken += total;
    __syncthreads();
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
      const T up = j < experts && sel[j] > T(0) ? dgk[j] : T(0);
      dg[r * slots + j] += (up - centre) / top[r];
    }
  }
}

}  // namespace

template <typename T>
void LaunchRouterTopK(const T* probs, int64_t rows, int64_t slots, int64_t experts, int64_t k,
                      int64_t capacity, T* selected, T* gates, T* top, cudaStream_t stream) {
  if (rows <= 0) return;
  PMOL_CUDA_REQUIRE(k >= 0 && k <= slots && experts <= slots, "RouterTopK: k or experts > slots");
  RouterTopKKernel<T><<<GridFor(rows), kThreads, 0, stream>>>(probs, rows, slots, experts, k,
                                                             selected, gates, top);
  PMOL_CUDA_CHECK_LAUNCH("RouterTopKKernel");
  if (capacity <= 0 || experts <= 0) return;
  RouterCapacityKernel<T><<<static_cast<unsigned>(experts), kScanThreads, 0, stream>>>(
      rows, slots, experts, capacity, selected, gates);
  PMOL_CUDA_CHECK_LAUNCH("RouterCapacityKernel");
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
  template void LaunchRouterTopK<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, T*,  \
                                    T*, T*, cudaStream_t);                                      \
  template void LaunchRouterTopKBackward<T>(const T*, const T*, const T*, const T*, int64_t,    \
                                            int64_t, int64_t, T*, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
