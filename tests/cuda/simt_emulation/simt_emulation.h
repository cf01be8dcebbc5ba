// A CPU emulation of the CUDA features pmol's kernels use, so that their very source runs,
// and is checked, on machines without a GPU: the tensor-core attention
// (kernels/cuda/attention_mma_kernels.cuh, included by its test) and every scalar kernel
// of kernels/cuda/*.cu (compiled here after emulate_launches.py has rewritten their
// `kernel<<<grid, block, shared, stream>>>(args)` launches into simt::LaunchKernel calls).
// A kernel body runs once per thread of a block, each CUDA thread a fiber (ucontext) with its
// own stack, all on the calling OS thread: a fiber runs until it reaches a barrier, then
// the next one runs; a barrier releases its fibers once all its threads have arrived.
// Blocks run one after another. Two schedules, both legal executions of a CUDA program:
//   forward (the default): round robin in index order, each thread running to its next
//     barrier of any kind (so the warps of a block move almost in step); blocks in grid
//     order; cp.async copies complete at the latest (the wait);
//   reverse (PMOL_SIMT_SCHEDULE=reverse): always the highest-numbered runnable thread, so
//     the last warp runs ahead to the next block barrier, then the one before it, and so
//     on; blocks from the last to the first; cp.async copies complete at the earliest (the
//     issue).
// A correct kernel gives the same results under both, since CUDA orders nothing between
// two barriers. A missing barrier shows under one of them, as stale shared memory or the
// 0xff fill: a read after write where the reader runs first, a write after read (a buffer
// refilled while slower warps still read it) where the writer runs ahead; so do blocks
// that read what another block writes. With
//   threadIdx, blockIdx: the running fiber's; gridDim, blockDim: set per launch (1-3
//     dimensions);
//   __shared__ variables: function statics, i.e. one instance that the block's threads
//     share (blocks run one after another); dynamic shared memory (PMOL_DYNAMIC_SHARED):
//     a buffer of the launch's size, filled with 0xff bytes (bf16 and f32 NaN) before each
//     block, so a read before a write shows;
//   __syncthreads / __syncthreads_and: a barrier of the block's threads (the _and variant
//     ANDs the predicates between two barriers); a barrier that can never fill (a
//     __syncthreads some threads skip) aborts with a message instead of hanging;
//   __shfl_xor_sync, __syncwarp: lanes exchange through a per-warp buffer between warp
//     barriers (warp w: threads 32w .. 32w + 31 in x-fastest order);
//   EmulatedMma16816: the warp's 32 lanes deposit their fragments, each lane rebuilds the
//     16x16 A and 16x8 B by the fragment layouts of the PTX ISA (mma.m16n8k16, .bf16:
//     lane = 4g + t holds A rows g, g+8, columns 2t, 2t+1, 2t+8, 2t+9; B column g, rows
//     2t, 2t+1, 2t+8, 2t+9; C rows g, g+8, columns 2t, 2t+1) and computes its C
//     elements in f32;
//   cp.async (CopyAsync16 / Commit / Wait of kernels/cuda/mma.cuh): each thread's copies
//     are held back until the wait that completes their group (forward schedule), or done
//     at their issue (reverse schedule);
//   __floats2bfloat162_rn: nearest-even rounding, as the hardware's;
//   device math (exp, log, sqrt, max, ...): the host's, so results may differ from a GPU's
//     in the last bit, never more.
// "Device" pointers are host pointers and a stream is ignored (launches run at once).
// The emulation checks the kernels' logic (indexing, masks, reductions, barriers, fragment
// bookkeeping) against the programming model as documented; that the hardware follows it
// is for the GPU tests to confirm.
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_SIMT_EMULATION_H_
#define PMOL_TESTS_CUDA_SIMT_EMULATION_SIMT_EMULATION_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ucontext.h>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)  // the memcheck twins (tests/cuda/simt_emulation.bzl)
#include <sanitizer/common_interface_defs.h>  // the fiber switches
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define PMOL_DYNAMIC_SHARED(name) unsigned char* const name = ::simt::DynamicShared()

#include "runtime_api_emulation.h"

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

using std::max;
using std::min;

// Rounded operations that must not be contracted into an FMA (as nvcc's intrinsics).
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline double __dadd_rn(double a, double b) {
  volatile double r = a + b;
  return r;
}

inline dim3 threadIdx;
inline dim3 blockIdx;
inline dim3 gridDim;
inline dim3 blockDim;

namespace simt {

constexpr int kMaxWarps = 32;
constexpr int kMaxThreads = 32 * kMaxWarps;
#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer clears the shadow of a fiber's whole stack at each switch into it.
constexpr size_t kFiberStack = 64 * 1024;
#else
constexpr size_t kFiberStack = 256 * 1024;
#endif

// Under AddressSanitizer a switch between stacks is announced (start) and completed
// (finish), so that it tracks which stack is live; no-ops otherwise.
inline void StartStackSwitch(void** fake_stack, const void* bottom, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
#else
  (void)fake_stack, (void)bottom, (void)size;
#endif
}
inline void FinishStackSwitch(void* fake_stack, const void** old_bottom, size_t* old_size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, old_bottom, old_size);
#else
  (void)fake_stack, (void)old_bottom, (void)old_size;
#endif
}

struct Barrier {
  int size = 0, arrived = 0;
  uint64_t generation = 0;
};

struct Block {
  // The fibers of the running block and the scheduler they return to.
  ucontext_t scheduler;
  const void* scheduler_stack = nullptr;  // for the switches back (AddressSanitizer)
  size_t scheduler_stack_size = 0;
  void* fake_stacks[kMaxThreads];
  ucontext_t fibers[kMaxThreads];
  std::unique_ptr<char[]> stacks[kMaxThreads];
  const Barrier* waiting_on[kMaxThreads];
  uint64_t waiting_generation[kMaxThreads];
  bool done[kMaxThreads];
  int current = 0, running = 0;
  void (*invoke)(void*) = nullptr;
  void* kernel = nullptr;
  // What the threads share.
  Barrier all;
  Barrier warp[kMaxWarps];
  int and_result = 1;
  unsigned char shuffle[kMaxWarps][32][8];
  uint32_t a[kMaxWarps][32][4];
  uint32_t b[kMaxWarps][32][2];
  // Per thread: its cp.async copies not yet completed, and the ends (in that list) of its
  // committed groups, oldest first.
  struct AsyncCopy {
    void* dst;
    const void* src;
    bool valid;
  };
  std::vector<AsyncCopy> async_copies[kMaxThreads];
  std::vector<size_t> async_groups[kMaxThreads];
};
inline Block& CurrentBlock() {
  static Block block;
  return block;
}
inline int linear_thread = 0;  // the running fiber: x fastest, then y, then z

// Whether PMOL_SIMT_SCHEDULE asks for the reverse schedule (see the top of this file);
// read once. Any value but "forward", "reverse" or none aborts, naming the variable.
inline bool ReverseSchedule() {
  static const bool reverse = [] {
    const char* value = std::getenv("PMOL_SIMT_SCHEDULE");
    if (value == nullptr || value[0] == '\0' || std::strcmp(value, "forward") == 0) {
      return false;
    }
    if (std::strcmp(value, "reverse") == 0) return true;
    std::fprintf(stderr, "simt emulation: PMOL_SIMT_SCHEDULE='%s' is neither 'forward' nor "
                 "'reverse'\n", value);
    std::abort();
  }();
  return reverse;
}
inline int Warp() { return linear_thread / 32; }
inline int Lane() { return linear_thread % 32; }

// The running thread arrives at `barrier`; the last to arrive releases the others and goes
// on, the others wait (their fibers yield to the scheduler until the barrier moves on).
inline void Arrive(Barrier& barrier) {
  Block& b = CurrentBlock();
  const uint64_t generation = barrier.generation;
  if (++barrier.arrived == barrier.size) {
    barrier.arrived = 0;
    ++barrier.generation;
    return;
  }
  const int me = b.current;
  b.waiting_on[me] = &barrier;
  b.waiting_generation[me] = generation;
  StartStackSwitch(&b.fake_stacks[me], b.scheduler_stack, b.scheduler_stack_size);
  swapcontext(&b.fibers[me], &b.scheduler);
  FinishStackSwitch(b.fake_stacks[me], &b.scheduler_stack, &b.scheduler_stack_size);
}

inline void FiberMain() {
  Block& b = CurrentBlock();
  FinishStackSwitch(nullptr, &b.scheduler_stack, &b.scheduler_stack_size);
  b.invoke(b.kernel);
  b.done[b.current] = true;
  --b.running;
  StartStackSwitch(nullptr, b.scheduler_stack, b.scheduler_stack_size);  // this stack ends
}  // returns to the scheduler through uc_link

// Runs the block's `threads` fibers to completion.
inline void RunBlock(int threads, dim3 block) {
  Block& b = CurrentBlock();
  for (int i = 0; i < threads; ++i) {
    if (!b.stacks[i]) b.stacks[i].reset(new char[kFiberStack]);
    getcontext(&b.fibers[i]);
    b.fibers[i].uc_stack.ss_sp = b.stacks[i].get();
    b.fibers[i].uc_stack.ss_size = kFiberStack;
    b.fibers[i].uc_link = &b.scheduler;
    makecontext(&b.fibers[i], FiberMain, 0);
    b.waiting_on[i] = nullptr;
    b.done[i] = false;
    b.async_copies[i].clear();
    b.async_groups[i].clear();
  }
  b.running = threads;
  const auto runnable = [&b](int i) {  // not done, and not held at a barrier still filling
    return !b.done[i] &&
           (b.waiting_on[i] == nullptr || b.waiting_on[i]->generation != b.waiting_generation[i]);
  };
  const auto run = [&b, block](int i) {  // until it finishes or waits at a barrier
    b.waiting_on[i] = nullptr;
    b.current = i;
    linear_thread = i;
    threadIdx = dim3(static_cast<unsigned>(i) % block.x, static_cast<unsigned>(i) / block.x % block.y,
                     static_cast<unsigned>(i) / (block.x * block.y));
    void* fake_stack = nullptr;
    StartStackSwitch(&fake_stack, b.stacks[i].get(), kFiberStack);
    swapcontext(&b.scheduler, &b.fibers[i]);
    FinishStackSwitch(fake_stack, nullptr, nullptr);
  };
  const bool reverse = ReverseSchedule();
  while (b.running > 0) {
    bool progressed = false;
    if (reverse) {  // the last runnable thread, so its warp runs ahead to the block barrier
      for (int i = threads - 1; i >= 0 && !progressed; --i) {
        if (runnable(i)) {
          run(i);
          progressed = true;
        }
      }
    } else {  // round robin in index order
      for (int i = 0; i < threads; ++i) {
        if (runnable(i)) {
          run(i);
          progressed = true;
        }
      }
    }
    if (!progressed) {
      std::fprintf(stderr, "simt emulation: block (%u, %u, %u) deadlocks: %d threads wait at "
                   "barriers the others never reach (a divergent __syncthreads?)\n",
                   blockIdx.x, blockIdx.y, blockIdx.z, b.running);
      std::abort();
    }
  }
}

inline unsigned char*& DynamicSharedSlot() {
  static unsigned char* buffer = nullptr;
  return buffer;
}
inline unsigned char* DynamicShared() { return DynamicSharedSlot(); }

inline float Bf16Value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Runs kernel() for every thread of every block of `grid` (blocks one after another),
// `block` threads per block (x fastest). shared/shared_bytes: the buffer behind the
// kernels' dynamic shared memory and the bytes this launch asked for (which must fit).
template <typename Kernel>
bool Launch(dim3 grid, dim3 block, unsigned char* shared, size_t shared_capacity,
            size_t shared_bytes, Kernel kernel) {
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (shared_bytes > shared_capacity || threads < 1 || threads > 32 * kMaxWarps) return false;
  gridDim = grid;
  blockDim = block;
  DynamicSharedSlot() = shared;
  Block& b = CurrentBlock();
  b.invoke = [](void* k) { (*static_cast<Kernel*>(k))(); };
  b.kernel = &kernel;
  const int warps = (threads + 31) / 32;
  const bool reverse = ReverseSchedule();
  for (unsigned zi = 0; zi < grid.z; ++zi) {
    const unsigned z = reverse ? grid.z - 1 - zi : zi;
    for (unsigned yi = 0; yi < grid.y; ++yi) {
      const unsigned y = reverse ? grid.y - 1 - yi : yi;
      for (unsigned xi = 0; xi < grid.x; ++xi) {
        const unsigned x = reverse ? grid.x - 1 - xi : xi;
        if (shared_bytes > 0) std::memset(shared, 0xff, shared_bytes);
        b.all = Barrier{threads, 0, 0};
        for (int w = 0; w < warps; ++w) b.warp[w] = Barrier{std::min(32, threads - 32 * w), 0, 0};
        blockIdx = dim3(x, y, z);
        RunBlock(threads, block);
      }
    }
  }
  return true;
}

// The form emulate_launches.py writes for `kernel<<<grid, block, shared, stream>>>(args)`:
// LaunchKernel({grid, block, shared, stream}, [&] { kernel(args); }). Aborts on a launch
// the hardware would refuse (more than 1024 threads, over 227 KiB of shared memory).
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared = 0;
  cudaStream_t stream = nullptr;
};

template <typename Kernel>
void LaunchKernel(const LaunchConfig& config, Kernel kernel) {
  constexpr size_t kSharedCapacity = 227 * 1024;
  std::vector<std::max_align_t> buffer(config.shared / sizeof(std::max_align_t) + 1);
  PoisonPast(buffer.data(), config.shared, buffer.size() * sizeof(std::max_align_t));
  if (!Launch(config.grid, config.block, reinterpret_cast<unsigned char*>(buffer.data()),
              kSharedCapacity, config.shared, kernel)) {
    std::fprintf(stderr, "simt emulation: a launch of %u threads per block and %zu bytes of "
                 "shared memory would fail on the GPU\n",
                 config.block.x * config.block.y * config.block.z, config.shared);
    std::abort();
  }
}

}  // namespace simt

inline void __syncthreads() { simt::Arrive(simt::CurrentBlock().all); }
inline void __syncwarp(unsigned /*mask: every lane*/ = 0xffffffffu) {
  simt::Arrive(simt::CurrentBlock().warp[simt::Warp()]);
}

inline int __syncthreads_and(int predicate) {
  simt::Block& block = simt::CurrentBlock();
  __syncthreads();  // every thread has read the previous result
  if (threadIdx.x == 0) block.and_result = 1;
  __syncthreads();
  if (!predicate) block.and_result = 0;
  __syncthreads();
  return block.and_result;
}

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask: every lane*/, T v, int lane_mask) {
  static_assert(sizeof(T) <= 8);
  simt::Block& block = simt::CurrentBlock();
  const int w = simt::Warp();
  const int l = simt::Lane();
  std::memcpy(block.shuffle[w][l], &v, sizeof(T));
  simt::Arrive(block.warp[w]);
  T other;
  std::memcpy(&other, block.shuffle[w][l ^ lane_mask], sizeof(T));
  simt::Arrive(block.warp[w]);
  return other;
}

inline void EmulatedMma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  simt::Block& block = simt::CurrentBlock();
  const int w = simt::Warp();
  const int l = simt::Lane();
  for (int i = 0; i < 4; ++i) block.a[w][l][i] = a[i];
  block.b[w][l][0] = b0;
  block.b[w][l][1] = b1;
  simt::Arrive(block.warp[w]);
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
  simt::Arrive(block.warp[w]);  // the fragments are read before the next product
}

// cp.async (kernels/cuda/mma.cuh): the hardware may complete a copy at any time between
// its issue and the CopyAsyncWait that completes its group. The forward schedule holds it
// back until that wait, the latest, so a kernel that reads shared memory before waiting
// reads the 0xff fill (or an older tile); the reverse schedule copies at once, the
// earliest, so a kernel that issues a copy into a buffer other threads may still be
// reading (a missing barrier before the issue) overwrites it under their feet.
inline void EmulatedCopyAsync16(void* smem, const void* gmem, bool valid) {
  simt::Block& block = simt::CurrentBlock();
  if (simt::ReverseSchedule()) {
    if (valid) {
      std::memcpy(smem, gmem, 16);
    } else {
      std::memset(smem, 0, 16);
    }
    return;
  }
  block.async_copies[block.current].push_back({smem, gmem, valid});
}
inline void EmulatedCopyAsyncCommit() {
  simt::Block& block = simt::CurrentBlock();
  block.async_groups[block.current].push_back(block.async_copies[block.current].size());
}
inline void EmulatedCopyAsyncWait(int pending) {
  simt::Block& block = simt::CurrentBlock();
  std::vector<simt::Block::AsyncCopy>& copies = block.async_copies[block.current];
  std::vector<size_t>& groups = block.async_groups[block.current];
  const int complete = static_cast<int>(groups.size()) - pending;
  if (complete <= 0) return;
  const size_t end = groups[complete - 1];
  for (size_t i = 0; i < end; ++i) {
    if (copies[i].valid) {
      std::memcpy(copies[i].dst, copies[i].src, 16);
    } else {
      std::memset(copies[i].dst, 0, 16);
    }
  }
  copies.erase(copies.begin(), copies.begin() + static_cast<std::ptrdiff_t>(end));
  groups.erase(groups.begin(), groups.begin() + complete);
  for (size_t& g : groups) g -= end;
}

#endif  // PMOL_TESTS_CUDA_SIMT_EMULATION_SIMT_EMULATION_H_
