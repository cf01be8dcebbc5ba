// Tensor-core pieces of the bf16 attention kernels (attention_mma_kernels.cuh, launched by
// attention_mma.cu): when they apply, their launchers, the warp-level bf16 matrix product
// mma.sync.m16n8k16 (f32 accumulators), and the shared-memory tiles its operands come from.
//
// One mma multiplies a 16x16 bf16 A by a 16x8 bf16 B into a 16x8 f32 C, each spread over
// the 32 lanes of a warp (PTX ISA, "matrix fragments for mma.m16n8k16"): with g = lane/4
// and t = lane%4, a lane holds
//   A: rows g and g+8, columns 2t, 2t+1 and 2t+8, 2t+9 (four registers of two bf16, the
//      lower column in the lower half);
//   B: column g, rows 2t, 2t+1 and 2t+8, 2t+9 (two registers);
//   C: rows g and g+8, columns 2t, 2t+1: element e of a C tile is at row g + 8*(e/2),
//      column 2t + e%2.
// So a C tile is, register for register, half of an A fragment: scores computed into C
// tiles are rounded to bf16 and fed as A to the next product without leaving registers
// (FlashAttention-2's trick). Every product here has the form
//   C[16 rows, N] += A[16 rows, K] * B,  B[k][n] = tile[n][k],
// i.e. B is read from a row-major shared tile whose rows are B's columns; products that
// need B = X (not X^T) read a transposed copy of X kept in shared memory.
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

struct MmaLane {
  int g;  // lane / 4
  int t;  // lane % 4
};
__device__ __forceinline__ MmaLane ThisMmaLane() {
  const int lane = threadIdx.x % kWarp;
  return {lane / 4, lane % 4};
}

// Max and sum over the 4 lanes of a group (lanes 4g .. 4g+3 hold the same C rows).
__device__ __forceinline__ float GroupMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float GroupSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Two adjacent bf16 of a shared tile (the first at an even element index) as one register.
__device__ __forceinline__ uint32_t LoadPair(const uint16_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// (lo, hi) rounded to bf16 (nearest even, as F32ToBf16) and packed, lo in the lower half.
__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return bits;
}

// c += a * b: a 16x16 bf16 A fragment, (b0, b1) a 16x8 bf16 B fragment, c 16x8 f32.
// (PMOL_CUDA_SIMT_EMULATION: the CPU emulation of tests/cuda/simt_emulation/ computes the
// same product from the same fragments.)
__device__ __forceinline__ void Mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(PMOL_CUDA_SIMT_EMULATION)
  EmulatedMma16816(c, a, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// c[j] (C tiles: 16 rows by columns [8j, 8j + 8), j < kN/8) += A * B where A is rows
// [a_row0, a_row0 + 16) of the row-major tile a (kK columns) and B[k][n] = b[n][k] for
// the first kN rows n of the row-major tile b (kK columns).
template <int kK, int kN>
__device__ __forceinline__ void MmaRowsTimesRowsT(const uint16_t* a, int lda, int a_row0,
                                                  const uint16_t* b, int ldb,
                                                  float (&c)[kN / 8][4]) {
  const MmaLane lane = ThisMmaLane();
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    const uint16_t* pa = a + (a_row0 + lane.g) * lda + 16 * kk + 2 * lane.t;
    const uint32_t frag[4] = {LoadPair(pa), LoadPair(pa + 8 * lda), LoadPair(pa + 8),
                              LoadPair(pa + 8 * lda + 8)};
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
      const uint16_t* pb = b + (8 * j + lane.g) * ldb + 16 * kk + 2 * lane.t;
      Mma16816(c[j], frag, LoadPair(pb), LoadPair(pb + 8));
    }
  }
}

// c[j] += P * B where P is the 16 x kK matrix held in C tiles p[kK/8] (rounded to bf16
// here) and B[k][n] = b[n][k] for the first kN rows n of the row-major tile b.
template <int kK, int kN>
__device__ __forceinline__ void MmaRegsTimesRowsT(const float (&p)[kK / 8][4],
                                                  const uint16_t* b, int ldb,
                                                  float (&c)[kN / 8][4]) {
  const MmaLane lane = ThisMmaLane();
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    const uint32_t frag[4] = {PackBf16(p[2 * kk][0], p[2 * kk][1]),
                              PackBf16(p[2 * kk][2], p[2 * kk][3]),
                              PackBf16(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                              PackBf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
      const uint16_t* pb = b + (8 * j + lane.g) * ldb + 16 * kk + 2 * lane.t;
      Mma16816(c[j], frag, LoadPair(pb), LoadPair(pb + 8));
    }
  }
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
