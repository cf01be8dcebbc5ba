// Device-side helpers shared by the .cu files: launch checking, grid sizing for
// grid-stride loops, and warp/block sum and max reductions (fixed shuffle trees, so a
// reduction's result depends only on the data and the block size: deterministic).
#ifndef PMOL_KERNELS_CUDA_COMMON_CUH_
#define PMOL_KERNELS_CUDA_COMMON_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

// The block's dynamic shared memory (16-byte aligned), named `name` and indexed as an
// unsigned char array. The CPU emulation of the kernels (tests/cuda/simt_emulation)
// defines it first.
#ifndef PMOL_DYNAMIC_SHARED
#define PMOL_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace pmol::cuda {

// A failed launch is a bug (bad configuration) or a broken device: abort loudly.
inline void CheckLaunch(const char* kernel, const char* file, int line) {
  cudaError_t err = cudaPeekAtLastError();
  if (err != cudaSuccess) {
    std::fprintf(stderr, "pmol: CUDA launch of %s failed at %s:%d: %s\n", kernel, file, line,
                 cudaGetErrorString(err));
    std::abort();
  }
}
#define PMOL_CUDA_CHECK_LAUNCH(kernel) ::pmol::cuda::CheckLaunch(kernel, __FILE__, __LINE__)

// Internal invariant of a launcher (shapes the caller promised): abort with a message.
#define PMOL_CUDA_REQUIRE(cond, msg)                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "pmol: CUDA kernel precondition failed at %s:%d: %s (%s)\n", \
                   __FILE__, __LINE__, #cond, msg);                                    \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

constexpr int kThreads = 256;
constexpr int kWarp = 32;

// Blocks for a grid-stride loop over n items: enough to fill the device, capped so that
// huge n loops inside the kernel instead of launching millions of blocks.
inline unsigned GridFor(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65536) blocks = 65536;
  return static_cast<unsigned>(blocks);
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T WarpMax(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `shared` holds 32 values. Ends with a barrier, so it may be called
// again right away.
template <typename T>
__device__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  v = WarpSum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : T(0);
  total = WarpSum(total);
  __syncthreads();
  return total;
}

template <typename T>
__device__ T BlockMax(T v, T* shared) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = blockDim.x / kWarp;
  v = WarpMax(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T total = lane < warps ? shared[lane] : shared[0];
  total = WarpMax(total);
  __syncthreads();
  return total;
}

// Threads per block for a one-block-per-row kernel over rows of `width` elements.
inline int RowThreads(int64_t width) {
  int threads = 32;
  while (threads < 1024 && threads < width) threads *= 2;
  return threads;
}

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_COMMON_CUH_
