// Optimizer kernels.
//   AdamW: one torch.optim.AdamW update per element (math in kernels/backend.h), a
//     grid-stride loop over independent elements with torch's order of operations; the
//     scalars are formed in double on the host and rounded to T once. nvcc contracts the
//     multiply-adds into FMAs, so results may differ from the CPU by an ulp or two.
//   SumSquares: *acc += sum x^2 in double, deterministic without atomics. Stage 1: a
//     number of blocks that depends only on n, each summing a fixed grid-stride subset
//     per thread and then the block by a fixed shuffle tree (common.cuh) into
//     partial[block]. Stage 2: one block sums the partials the same way and adds to *acc.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

constexpr int64_t kSumSquaresMaxBlocks = 512;
constexpr int64_t kSumSquaresPerThread = 8;

template <typename T>
__global__ void AdamWKernel(T* p, const T* g, T* m, T* v, int64_t n, T decay, T beta1,
                            T one_minus_beta1, T beta2, T one_minus_beta2, T bc2_sqrt,
                            T neg_step_size, T eps) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T gi = g[i];
    const T mi = m[i] * beta1 + one_minus_beta1 * gi;
    const T vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    const T denom = sqrt(vi) / bc2_sqrt + eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay + neg_step_size * (mi / denom);
  }
}

template <typename T>
__global__ void SumSquaresPartialKernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[kWarp];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const double xi = static_cast<double>(x[i]);
    acc += xi * xi;
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void SumSquaresFinishKernel(const double* partial, int64_t count, double* acc) {
  __shared__ double shared[kWarp];
  double total = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) total += partial[i];
  total = BlockSum(total, shared);
  if (threadIdx.x == 0) *acc += total;
}

int64_t SumSquaresBlocks(int64_t n) {
  int64_t blocks = (n + kThreads * kSumSquaresPerThread - 1) / (kThreads * kSumSquaresPerThread);
  if (blocks < 1) blocks = 1;
  if (blocks > kSumSquaresMaxBlocks) blocks = kSumSquaresMaxBlocks;
  return blocks;
}

}  // namespace

template <typename T>
void LaunchAdamWStep(const AdamWLaunchScalars& s, T* p, const T* g, T* m, T* v, int64_t n,
                     cudaStream_t stream) {
  if (n <= 0) return;
  AdamWKernel<T><<<GridFor(n), kThreads, 0, stream>>>(
      p, g, m, v, n, static_cast<T>(1.0 - s.lr * s.weight_decay), static_cast<T>(s.beta1),
      static_cast<T>(1.0 - s.beta1), static_cast<T>(s.beta2), static_cast<T>(1.0 - s.beta2),
      static_cast<T>(std::sqrt(s.bias_correction2)),
      static_cast<T>(-(s.lr / s.bias_correction1)), static_cast<T>(s.eps));
  PMOL_CUDA_CHECK_LAUNCH("AdamWKernel");
}

size_t SumSquaresScratchBytes(int64_t n) {
  return static_cast<size_t>(SumSquaresBlocks(n)) * sizeof(double);
}

template <typename T>
void LaunchSumSquares(const T* x, int64_t n, double* acc, void* scratch, cudaStream_t stream) {
  if (n <= 0) return;
  PMOL_CUDA_REQUIRE(scratch != nullptr, "SumSquares needs scratch");
  const int64_t blocks = SumSquaresBlocks(n);
  double* partial = static_cast<double*>(scratch);
  SumSquaresPartialKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, n,
                                                                                     partial);
  PMOL_CUDA_CHECK_LAUNCH("SumSquaresPartialKernel");
  SumSquaresFinishKernel<<<1, kThreads, 0, stream>>>(partial, blocks, acc);
  PMOL_CUDA_CHECK_LAUNCH("SumSquaresFinishKernel");
}

template void LaunchAdamWStep<float>(const AdamWLaunchScalars&, float*, const float*, float*,
                                     float*, int64_t, cudaStream_t);
template void LaunchAdamWStep<double>(const AdamWLaunchScalars&, double*, const double*,
                                      double*, double*, int64_t, cudaStream_t);
template void LaunchSumSquares<float>(const float*, int64_t, double*, void*, cudaStream_t);
template void LaunchSumSquares<double>(const double*, int64_t, double*, void*, cudaStream_t);

}  // namespace pmol::cuda
