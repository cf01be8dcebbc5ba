// The warp-level bf16 tensor-core product mma.sync.m16n8k16 (f32 accumulators) and the
// shared-memory tiles its operands come from, for the bf16 kernels that use it
// (attention_mma_kernels.cuh, experts.cu).
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
// (PMOL_CUDA_SIMT_EMULATION: the CPU emulation of tests/cuda/simt_emulation/ computes the
// same product from the same fragments.)
#ifndef PMOL_KERNELS_CUDA_MMA_CUH_
#define PMOL_KERNELS_CUDA_MMA_CUH_

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "kernels/cuda/common.cuh"

namespace pmol::cuda {

struct MmaLane {
  int g;  // lane / 4
  int t;  // lane % 4
};
__device__ __forceinline__ MmaLane ThisMmaLane() {
  const int lane = threadIdx.x % kWarp;
  return {lane / 4, lane % 4};
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

// The A fragment of k-step kk (columns [16kk, 16kk + 16)) of rows [a_row0, a_row0 + 16)
// of the row-major tile a.
__device__ __forceinline__ void LoadRowsFragment(const uint16_t* a, int lda, int a_row0, int kk,
                                                 MmaLane lane, uint32_t (&frag)[4]) {
  const uint16_t* pa = a + (a_row0 + lane.g) * lda + 16 * kk + 2 * lane.t;
  frag[0] = LoadPair(pa);
  frag[1] = LoadPair(pa + 8 * lda);
  frag[2] = LoadPair(pa + 8);
  frag[3] = LoadPair(pa + 8 * lda + 8);
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
    uint32_t frag[4];
    LoadRowsFragment(a, lda, a_row0, kk, lane, frag);
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
      const uint16_t* pb = b + (8 * j + lane.g) * ldb + 16 * kk + 2 * lane.t;
      Mma16816(c[j], frag, LoadPair(pb), LoadPair(pb + 8));
    }
  }
}

// c[j] += A * B with A as in MmaRowsTimesRowsT and B[k][n] = b[k][n]: the first kK rows
// of the row-major tile b hold B as it is (columns [8j, 8j + 8) for tile j), so a B
// register pairs two bf16 of adjacent rows.
template <int kK, int kN>
__device__ __forceinline__ void MmaRowsTimesCols(const uint16_t* a, int lda, int a_row0,
                                                 const uint16_t* b, int ldb,
                                                 float (&c)[kN / 8][4]) {
  const MmaLane lane = ThisMmaLane();
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    uint32_t frag[4];
    LoadRowsFragment(a, lda, a_row0, kk, lane, frag);
    const uint16_t* pb = b + (16 * kk + 2 * lane.t) * ldb + lane.g;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
      const uint16_t* col = pb + 8 * j;
      const uint32_t b0 = col[0] | (static_cast<uint32_t>(col[ldb]) << 16);
      const uint32_t b1 = col[8 * ldb] | (static_cast<uint32_t>(col[9 * ldb]) << 16);
      Mma16816(c[j], frag, b0, b1);
    }
  }
}

// Asynchronous 16-byte copies from global to shared memory (cp.async.cg, sm_80+): the
// thread's copies issued since its last CopyAsyncCommit form a group; CopyAsyncWait<N>
// returns once at most N of the thread's committed groups are still in flight. A copy
// with valid false reads nothing and zero-fills its 16 bytes (gmem must still be a
// mapped address). Other threads see the data after the wait and a __syncthreads.
// (PMOL_CUDA_SIMT_EMULATION: the emulation holds the copies back until the wait that
// completes them, so a read before it shows.)
__device__ __forceinline__ void CopyAsync16(void* smem, const void* gmem, bool valid) {
#if defined(PMOL_CUDA_SIMT_EMULATION)
  EmulatedCopyAsync16(smem, gmem, valid);
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void CopyAsyncCommit() {
#if defined(PMOL_CUDA_SIMT_EMULATION)
  EmulatedCopyAsyncCommit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int kPending>
__device__ __forceinline__ void CopyAsyncWait() {
#if defined(PMOL_CUDA_SIMT_EMULATION)
  EmulatedCopyAsyncWait(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
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

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_MMA_CUH_
