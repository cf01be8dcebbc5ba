// A CPU emulation of the CUDA features pmol's tensor-core attention kernels use
// (kernels/cuda/attention_mma_kernels.cuh), so that their very source runs, and is
// checked, on machines without a GPU. A kernel body runs once per thread of a block on
// real OS threads (one block at a time), with
//   threadIdx, blockIdx: thread-local; gridDim, blockDim: set per launch;
//   __syncthreads / __syncthreads_and: a barrier of the block's threads (the _and variant
//     ANDs the predicates between two barriers);
//   __shfl_xor_sync: lanes exchange through a per-warp buffer between warp barriers;
//   EmulatedMma16816: the warp's 32 lanes deposit their fragments, each lane rebuilds the
//     16x16 A and 16x8 B by the fragment layouts of the PTX ISA (mma.m16n8k16, .bf16:
//     lane = 4g + t holds A rows g, g+8, columns 2t, 2t+1, 2t+8, 2t+9; B column g, rows
//     2t, 2t+1, 2t+8, 2t+9; C rows g, g+8, columns 2t, 2t+1) and computes its C
//     elements in f32;
//   __floats2bfloat162_rn: nearest-even rounding, as the hardware's.
// Shared memory is the buffer the including test defines as pmol::cuda::shared_raw (the
// kernels' `extern __shared__ unsigned char shared_raw[]` then names it); each launch
// fills the bytes it asked for with 0xff (bf16 NaN), so a read before a write shows.
// The test defines PMOL_CUDA_SIMT_EMULATION before including the kernels. The emulation
// checks the kernels' logic (indexing, masks, the online softmax, tile loads, barriers,
// fragment bookkeeping) against the layouts as documented; that the hardware follows them
// is for the GPU tests to confirm.
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_SIMT_EMULATION_H_
#define PMOL_TESTS_CUDA_SIMT_EMULATION_SIMT_EMULATION_H_

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

typedef struct EmulatedStream* cudaStream_t;
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

struct __nv_bfloat162 {
  uint16_t x, y;
};
inline uint16_t EmulatedRoundToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return {EmulatedRoundToBf16(lo), EmulatedRoundToBf16(hi)};
}

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 gridDim;
inline dim3 blockDim;

namespace simt {

constexpr int kMaxWarps = 32;

struct Block {
  std::unique_ptr<std::barrier<>> all;
  std::unique_ptr<std::barrier<>> warp[kMaxWarps];
  std::atomic<int> and_result{1};
  float shuffle[kMaxWarps][32];
  uint32_t a[kMaxWarps][32][4];
  uint32_t b[kMaxWarps][32][2];
};
inline Block& CurrentBlock() {
  static Block block;
  return block;
}
inline int Warp() { return static_cast<int>(threadIdx.x) / 32; }
inline int Lane() { return static_cast<int>(threadIdx.x) % 32; }

inline float Bf16Value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Runs kernel() for every thread of every block of `grid` (blocks one after another).
// shared/shared_bytes: the buffer behind the kernels' dynamic shared memory and the bytes
// this launch asked for (which must fit).
template <typename Kernel>
bool Launch(dim3 grid, int threads, unsigned char* shared, size_t shared_capacity,
            size_t shared_bytes, Kernel kernel) {
  if (shared_bytes > shared_capacity || threads % 32 != 0 || threads > 32 * kMaxWarps) {
    return false;
  }
  gridDim = grid;
  blockDim = dim3(static_cast<unsigned>(threads));
  Block& block = CurrentBlock();
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        std::memset(shared, 0xff, shared_bytes);
        block.all = std::make_unique<std::barrier<>>(threads);
        for (int w = 0; w < threads / 32; ++w) block.warp[w] = std::make_unique<std::barrier<>>(32);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (int i = 0; i < threads; ++i) {
          pool.emplace_back([&, i] {
            threadIdx = dim3(static_cast<unsigned>(i));
            blockIdx = dim3(x, y, z);
            kernel();
          });
        }
        for (std::thread& t : pool) t.join();
      }
    }
  }
  return true;
}

}  // namespace simt

inline void __syncthreads() { simt::CurrentBlock().all->arrive_and_wait(); }

inline int __syncthreads_and(int predicate) {
  simt::Block& block = simt::CurrentBlock();
  __syncthreads();  // every thread has read the previous result
  if (threadIdx.x == 0) block.and_result = 1;
  __syncthreads();
  if (!predicate) block.and_result = 0;
  __syncthreads();
  return block.and_result.load();
}

inline float __shfl_xor_sync(unsigned /*mask: every lane*/, float v, int lane_mask) {
  simt::Block& block = simt::CurrentBlock();
  const int w = simt::Warp();
  const int l = simt::Lane();
  block.shuffle[w][l] = v;
  block.warp[w]->arrive_and_wait();
  const float other = block.shuffle[w][l ^ lane_mask];
  block.warp[w]->arrive_and_wait();
  return other;
}

inline void EmulatedMma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  simt::Block& block = simt::CurrentBlock();
  const int w = simt::Warp();
  const int l = simt::Lane();
  for (int i = 0; i < 4; ++i) block.a[w][l][i] = a[i];
  block.b[w][l][0] = b0;
  block.b[w][l][1] = b1;
  block.warp[w]->arrive_and_wait();
  float A[16][16];
  float B[16][8];
  const auto lo = [](uint32_t r) { return simt::Bf16Value(static_cast<uint16_t>(r & 0xffffu)); };
  const auto hi = [](uint32_t r) { return simt::Bf16Value(static_cast<uint16_t>(r >> 16)); };
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4;
    const int t = lane % 4;
    const uint32_t* ra = block.a[w][lane];
    const uint32_t* rb = block.b[w][lane];
    A[g][2 * t] = lo(ra[0]);
    A[g][2 * t + 1] = hi(ra[0]);
    A[g + 8][2 * t] = lo(ra[1]);
    A[g + 8][2 * t + 1] = hi(ra[1]);
    A[g][2 * t + 8] = lo(ra[2]);
    A[g][2 * t + 9] = hi(ra[2]);
    A[g + 8][2 * t + 8] = lo(ra[3]);
    A[g + 8][2 * t + 9] = hi(ra[3]);
    B[2 * t][g] = lo(rb[0]);
    B[2 * t + 1][g] = hi(rb[0]);
    B[2 * t + 8][g] = lo(rb[1]);
    B[2 * t + 9][g] = hi(rb[1]);
  }
  const int g = l / 4;
  const int t = l % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e / 2);
    const int col = 2 * t + e % 2;
    float sum = 0.0f;
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    c[e] += sum;
  }
  block.warp[w]->arrive_and_wait();  // the fragments are read before the next product
}

#endif  // PMOL_TESTS_CUDA_SIMT_EMULATION_SIMT_EMULATION_H_
