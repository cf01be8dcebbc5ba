// Tensor-core pieces of the bf16 attention kernels (attention_mma_kernels.cuh, launched by
// attention_mma.cu): when they apply, their launchers, and the shared-memory tiles of a head
// that the mma.sync products of mma.cuh read.
//
// Shared tiles are bf16 bit patterns (uint16_t): kMmaTile = 64 rows of a [B, T, H, D]
// tensor's head as [64][D + 8], or transposed as [D][64 + 8]. The 8-element pad makes the
// row stride 4 words more than a multiple of 32, so the 8 rows g of a fragment load fall
// on distinct memory banks.
#ifndef PMOL_KERNELS_CUDA_ATTENTION_MMA_CUH_
#define PMOL_KERNELS_CUDA_ATTENTION_MMA_CUH_

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"

namespace pmol::cuda {

constexpr int kMmaTile = 64;  // query rows of a block, and keys (or queries) of a tile
constexpr int kMmaWarps = 4;  // warp w owns rows [16w, 16w + 16) of the block's 64
constexpr int kMmaThreads = kMmaWarps * kWarp;
constexpr int kMmaTileLdT = kMmaTile + 8;  // row stride of a transposed tile [D][64]
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int kD>
constexpr int kMmaTileLd = kD + 8;  // row stride of a tile [64][D]

// Whether the tensor-core kernels take this attention: bf16 storage (the caller's type),
// head_dim 32, 64 or 128, and every tensor 16-byte aligned (rows are moved 8 elements at
// a time). Otherwise the scalar kernels of attention_forward.cu / attention_backward.cu
// run.
inline bool TensorCoreAttentionApplies(const AttentionDims& dims,
                                       std::initializer_list<const void*> tensors) {
  if (dims.head_dim != 32 && dims.head_dim != 64 && dims.head_dim != 128) return false;
  for (const void* p : tensors) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Launchers (attention_mma.cu), for dims that
// TensorCoreAttentionApplies accepts. lse is natural-log f32 as in backend.h; delta is
// the backward's per-row dot(dout, out) [B, Hq, T] in f32.
void LaunchAttentionForwardMma(const AttentionDims& dims, const Bf16* q, const Bf16* k,
                               const Bf16* v, Bf16* out, float* lse, cudaStream_t stream);
void LaunchAttentionBackwardMma(const AttentionDims& dims, const Bf16* q, const Bf16* k,
                                const Bf16* v, const float* lse, const float* delta,
                                const Bf16* dout, Bf16* dq, Bf16* dk, Bf16* dv,
                                cudaStream_t stream);

// ---------------------------------------------------------------------------------------
// Device pieces.

// Max and sum over the 4 lanes of a group (lanes 4g .. 4g+3 hold the same C rows).
__device__ __forceinline__ float GroupMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float GroupSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Rows [t0, t0 + 64) of head `head` of batch b of a [B, T, H, kD] bf16 tensor into the
// shared tile rows ([64][kD + 8]) and/or its transpose cols ([kD][64 + 8]); either may be
// null. Rows past the sequence end are zero. 16-byte loads, 8 elements each.
template <int kD>
__device__ __forceinline__ void LoadMmaTile(const Bf16* src, int64_t b, int64_t t0,
                                            int64_t seq, int64_t heads, int64_t head,
                                            uint16_t* rows, uint16_t* cols) {
  constexpr int kChunks = kD / 8;
  constexpr int kLd = kMmaTileLd<kD>;
  for (int idx = threadIdx.x; idx < kMmaTile * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks;
    const int c = idx - r * kChunks;
    const int64_t t = t0 + r;
    uint4 chunk = make_uint4(0u, 0u, 0u, 0u);
    if (t < seq) {
      chunk = *reinterpret_cast<const uint4*>(src + ((b * seq + t) * heads + head) * kD + 8 * c);
    }
    if (rows != nullptr) *reinterpret_cast<uint4*>(rows + r * kLd + 8 * c) = chunk;
    if (cols != nullptr) {
      const uint32_t words[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        cols[(8 * c + 2 * i) * kMmaTileLdT + r] = static_cast<uint16_t>(words[i] & 0xffffu);
        cols[(8 * c + 2 * i + 1) * kMmaTileLdT + r] = static_cast<uint16_t>(words[i] >> 16);
      }
    }
  }
}

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_ATTENTION_MMA_CUH_
