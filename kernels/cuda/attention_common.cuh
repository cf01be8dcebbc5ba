// Shared pieces of the attention kernels (attention_forward.cu, attention_backward.cu):
// tile sizes, the thread layout, shared-memory tile loads, key holes and the head-dim
// dispatch.
//
// Tiles are kTile = 32 query rows by kTile = 32 key rows; a block has 256 threads seen as
// 32 rows x 8 lanes: thread (row, lane) computes the scores of its row against keys
// lane, lane+8, lane+16, lane+24 of the tile, and accumulates the output features
// d = lane, lane+8, ... (at most kMaxD/8 registers). The 8 lanes of a row are adjacent
// in one warp, so row-wise max and sum are 3 xor-shuffles. Tiles in shared memory have a
// row stride of head_dim+1 to spread the rows over the memory banks. Tiles, scores and
// accumulators are of the compute type A = Accum<T> (f32 for Bf16 storage): LoadTile
// widens each element once.
#ifndef PMOL_KERNELS_CUDA_ATTENTION_COMMON_CUH_
#define PMOL_KERNELS_CUDA_ATTENTION_COMMON_CUH_

#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {

constexpr int kTile = 32;
constexpr int kAttnThreads = 256;
constexpr int kRowLanesAttn = 8;
constexpr int kKeysPerLane = kTile / kRowLanesAttn;  // 4
constexpr int kMaxSharedBytes = 227 * 1024;         // sm_90 opt-in limit per block

// The key hole of query q_pos of row b (kernels/backend.h: query i does not see keys
// [hb, he), but always sees key i); {0, 0} without holes or past the sequence end.
struct KeyHole {
  int64_t begin = 0, end = 0;
  __device__ __forceinline__ bool Hides(int64_t k_pos, int64_t q_pos) const {
    return k_pos != q_pos && k_pos >= begin && k_pos < end;
  }
};
// Whether query q_pos sees none of the keys [k0, k0 + width) through its hole, so that
// the tile can be skipped (a query past the sequence end is never written: it sees none).
// A block skips a tile only when every one of its queries agrees (__syncthreads_and).
__device__ __forceinline__ bool HidesTile(const KeyHole& h, int64_t k0, int64_t q_pos,
                                          int64_t seq, int width = kTile) {
  if (q_pos >= seq) return true;
  return h.begin <= k0 && k0 + width <= h.end && (q_pos < k0 || q_pos >= k0 + width);
}

__device__ __forceinline__ KeyHole LoadKeyHole(const int32_t* holes, int64_t b, int64_t seq,
                                               int64_t q_pos) {
  KeyHole h;
  if (holes != nullptr && q_pos < seq) {
    h.begin = holes[2 * (b * seq + q_pos)];
    h.end = holes[2 * (b * seq + q_pos) + 1];
  }
  return h;
}

// Loads rows [t0, t0 + kTile) of head `head` of a [B, T, H, D] tensor of batch b (storage
// type T) into a shared tile [kTile][ld] of A; rows past the sequence end are zero.
template <typename T, typename A>
__device__ __forceinline__ void LoadTile(const T* src, int64_t b, int64_t t0, int64_t seq,
                                         int64_t heads, int64_t head, int d_len, int ld,
                                         A* tile) {
  for (int idx = threadIdx.x; idx < kTile * d_len; idx += blockDim.x) {
    const int r = idx / d_len;
    const int d = idx - r * d_len;
    const int64_t t = t0 + r;
    tile[r * ld + d] =
        t < seq ? static_cast<A>(src[((b * seq + t) * heads + head) * d_len + d]) : A(0);
  }
}

template <typename T>
__device__ __forceinline__ T Dot(const T* a, const T* b, int d_len) {
  T acc = T(0);
#pragma unroll 4
  for (int d = 0; d < d_len; ++d) acc += a[d] * b[d];
  return acc;
}

// Max/sum over the 8 lanes of a row (lanes 8i..8i+7 of a warp).
template <typename T>
__device__ __forceinline__ T RowMax(T v) {
  v = max(v, __shfl_xor_sync(0xffffffffu, v, 1));
  v = max(v, __shfl_xor_sync(0xffffffffu, v, 2));
  v = max(v, __shfl_xor_sync(0xffffffffu, v, 4));
  return v;
}

template <typename T>
__device__ __forceinline__ T RowSum(T v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  return v;
}

// Calls fn.template operator()<kMaxD>() with the smallest compiled kMaxD >= head_dim, for
// tiles of type T (the compute type): f32: 32, 64, 128, 256; f64: 32, 64, 128 (256 would
// not fit in shared memory).
template <typename T, typename Fn>
void DispatchHeadDim(int64_t head_dim, Fn&& fn) {
  if (head_dim <= 32) {
    fn.template operator()<32>();
  } else if (head_dim <= 64) {
    fn.template operator()<64>();
  } else if (head_dim <= 128) {
    fn.template operator()<128>();
  } else {
    if constexpr (sizeof(T) == 4) {
      PMOL_CUDA_REQUIRE(head_dim <= 256, "attention: head_dim above 256 is not supported");
      fn.template operator()<256>();
    } else {
      PMOL_CUDA_REQUIRE(false, "attention in f64: head_dim above 128 is not supported");
    }
  }
}

inline void CheckAttentionDims(const AttentionDims& dims, size_t accum_size) {
  PMOL_CUDA_REQUIRE(dims.kv_heads > 0 && dims.q_heads % dims.kv_heads == 0,
                    "attention: q_heads must be a multiple of kv_heads");
  PMOL_CUDA_REQUIRE(dims.head_dim > 0 && dims.head_dim <= AttentionMaxHeadDim(accum_size),
                    "attention: unsupported head_dim");
  PMOL_CUDA_REQUIRE(dims.q_heads <= 65535 && dims.batch <= 65535,
                    "attention: too many heads or sequences for one grid");
}

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_ATTENTION_COMMON_CUH_
