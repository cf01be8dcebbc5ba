// Dropout's keep mask on the GPU (backend.h DropoutKeep): keep[i] = (u_i < p ? 0 : kept),
// u_i = UniformAt(key, i) of kernels/random_bits.h, one element per thread of a
// grid-stride loop: the mask the CPU backend makes for the same key, bit for bit. T is the
// storage type (uint16_t: bf16 bits; `kept` is the one of T).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/random_bits.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void DropoutKeepKernel(uint64_t key, double p, T kept, int64_t n, T* keep) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    keep[i] = UniformAt(key, static_cast<uint64_t>(i)) < p ? T(0) : kept;
  }
}

}  // namespace

template <typename T>
void LaunchDropoutKeep(uint64_t key, double p, T kept, int64_t n, T* keep, cudaStream_t stream) {
  if (n <= 0) return;
  DropoutKeepKernel<T><<<GridFor(n), kThreads, 0, stream>>>(key, p, kept, n, keep);
  PMOL_CUDA_CHECK_LAUNCH("DropoutKeepKernel");
}

template void LaunchDropoutKeep<float>(uint64_t, double, float, int64_t, float*, cudaStream_t);
template void LaunchDropoutKeep<double>(uint64_t, double, double, int64_t, double*, cudaStream_t);
template void LaunchDropoutKeep<uint16_t>(uint64_t, double, uint16_t, int64_t, uint16_t*,
                                          cudaStream_t);

}  // namespace pmol::cuda
