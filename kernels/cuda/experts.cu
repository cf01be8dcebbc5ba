// The PMoL experts' stacked projections with the router's gates fused in (kernels/backend.h
// ExpertsDown and ExpertsUpBackward, used by adapters/pmol_linear.cc). cols = blocks * width:
//   down:           p = x a^T (x [rows, k], a [cols, k]);  h = p,
//                   hs[n, b*w+j] = (alpha * g[n, b]) * p[n, b*w+j]
//   up, backward:   q = dy b (dy [rows, d], b [d, cols]);
//                   dg[n, b] = alpha * sum_j q[n, b*w+j] * h[n, b*w+j]   (j in order),
//                   dh[n, b*w+j] = (alpha * g[n, b]) * q[n, b*w+j]
// (g null: a plain LoRA, g = 1 and no dg). Two forms:
//  - Epilogue kernels finishing products that a GEMM already wrote in Accum<T> (any storage
//    type): one thread per output element (down), or per (row, block) (backward, its
//    `width` products summed in order, as ColumnBlockDots does).
//  - For bf16, one tensor-core kernel per direction that computes the products as well, so
//    they never leave the chip and are rounded once: blocks of 4 warps own 64 rows (warp w
//    rows [16w, 16w + 16)) by all cols, padded to kN (a multiple of 16, at most 128; the
//    experts' projections are narrow: 3 groups x 2 experts x r 8 = 48). The reduction
//    dimension streams through shared memory in tiles of 64, 4 tiles in flight at once
//    (cp.async: the products are a narrow GEMM, bound by reading x or dy once, so the
//    loads must overlap); a's rows and b's rows are copied as they are (mma.cuh reads B
//    from either). The f32 products then land in shared memory, and the epilogue above
//    runs on them there.
#include <algorithm>
#include <initializer_list>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"

namespace pmol::cuda {
namespace {

constexpr int kExpertRows = 64;                  // rows of x (or dy) per block
constexpr int kExpertWarps = kExpertRows / 16;   // one 16-row mma strip each
constexpr int kExpertThreads = kExpertWarps * kWarp;
constexpr int kExpertK = 64;                     // reduction tile
constexpr int kExpertLd = kExpertK + 8;          // tile row stride (bank spread, mma.cuh)
constexpr int kExpertStages = 4;                 // k-tiles in shared memory at once

// ---------------------------------------------------------------------------------------
// Epilogues on products in memory (p, q of Accum<T>, packed [rows, cols]).

template <typename T>
__global__ void ExpertsDownEpilogueKernel(const Accum<T>* p, const T* g, int64_t rows,
                                          int64_t blocks, int64_t width, Accum<T> alpha, T* h,
                                          T* hs) {
  using A = Accum<T>;
  const int64_t cols = blocks * width, n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A value = p[i];  // read before h or hs (either may be p) is written
    const A scale = g != nullptr ? alpha * static_cast<A>(g[(i / cols) * blocks + (i % cols) / width])
                                 : alpha;
    if (h != nullptr) h[i] = value;
    hs[i] = scale * value;
  }
}

template <typename T>
__global__ void ExpertsUpBackwardEpilogueKernel(const Accum<T>* q, const T* h, const T* g,
                                                int64_t rows, int64_t blocks, int64_t width,
                                                Accum<T> alpha, Accum<T>* dg, T* dh) {
  using A = Accum<T>;
  const int64_t n = rows * blocks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const A* qi = q + i * width;
    A scale = alpha;
    if (g != nullptr) {
      const T* hi = h + i * width;
      A sum = 0;
      for (int64_t j = 0; j < width; ++j) sum += qi[j] * static_cast<A>(hi[j]);
      dg[i] = alpha * sum;
      scale = alpha * static_cast<A>(g[i]);
    }
    T* out = dh + i * width;  // may be q: each element is read before it is written
    for (int64_t j = 0; j < width; ++j) out[j] = scale * qi[j];
  }
}

// ---------------------------------------------------------------------------------------
// bf16 tensor-core kernels.

// Dynamic shared memory of a block: kExpertStages tiles in flight, each the k-tile of the
// block's 64 rows of x (dy) and of w: a's rows as they are (kTransposed false: w[n][kk],
// [kN][kExpertLd]) or b's rows as they are (true: w[kk][n], [kExpertK][kN + 8]); after the
// last tile, the f32 products [64][kN + 4] over the same memory.
template <int kN, bool kTransposed>
struct ExpertsSmem {
  static constexpr int kXElems = kExpertRows * kExpertLd;
  static constexpr int kWLd = kTransposed ? kN + 8 : kExpertLd;
  static constexpr int kWElems = kTransposed ? kExpertK * kWLd : kN * kExpertLd;
  static constexpr int kStageElems = kXElems + kWElems;  // uint16_t, a multiple of 8
  static constexpr int kProductsLd = kN + 4;
  static constexpr size_t kBytes =
      std::max(size_t{kExpertStages} * kStageElems * 2, size_t{kExpertRows} * kProductsLd * 4);
};

// Issues the copies of k-tile [k0, k0 + 64) into one stage: rows [row0, row0 + 64) of
// x [rows, k], and of w either rows [0, kN) of a [cols, k] or rows [k0, k0 + 64) of
// b [k, cols]; out-of-range rows, columns and k are zero-filled. 16-byte copies (k and cols
// are multiples of 8 and the matrices 16-byte aligned: ExpertsMmaApplies).
template <int kN, bool kTransposed>
__device__ __forceinline__ void IssueExpertTile(const Bf16* x, const Bf16* w, int64_t rows,
                                                int64_t k, int64_t cols, int64_t row0,
                                                int64_t k0, uint16_t* stage) {
  using Smem = ExpertsSmem<kN, kTransposed>;
  constexpr int kChunks = kExpertK / 8;
  uint16_t* xs = stage;
  uint16_t* ws = stage + Smem::kXElems;
  for (int idx = threadIdx.x; idx < kExpertRows * kChunks; idx += blockDim.x) {
    const int r = idx / kChunks, c = idx % kChunks;
    const int64_t row = row0 + r, kk = k0 + 8 * c;
    const bool valid = row < rows && kk < k;
    CopyAsync16(xs + r * kExpertLd + 8 * c, valid ? x + row * k + kk : x, valid);
  }
  if constexpr (!kTransposed) {
    for (int idx = threadIdx.x; idx < kN * kChunks; idx += blockDim.x) {
      const int n = idx / kChunks, c = idx % kChunks;
      const int64_t kk = k0 + 8 * c;
      const bool valid = n < cols && kk < k;
      CopyAsync16(ws + n * kExpertLd + 8 * c, valid ? w + n * k + kk : w, valid);
    }
  } else {
    constexpr int kColChunks = kN / 8;
    for (int idx = threadIdx.x; idx < kExpertK * kColChunks; idx += blockDim.x) {
      const int kk = idx / kColChunks, c = idx % kColChunks;
      const int64_t krow = k0 + kk;
      const bool valid = krow < k && 8 * c < cols;
      CopyAsync16(ws + kk * Smem::kWLd + 8 * c, valid ? w + krow * cols + 8 * c : w, valid);
    }
  }
}

// The f32 products of the block's 64 rows by kN columns, left in shared memory (returned,
// [64][kProductsLd]). The k-tiles stream through kExpertStages stages: while a tile is
// multiplied, the next kExpertStages - 1 are in flight.
template <int kN, bool kTransposed>
__device__ __forceinline__ const float* ExpertProducts(const Bf16* x, const Bf16* w,
                                                       int64_t rows, int64_t k, int64_t cols,
                                                       int64_t row0, unsigned char* smem) {
  using Smem = ExpertsSmem<kN, kTransposed>;
  uint16_t* stages = reinterpret_cast<uint16_t*>(smem);
  const int warp = threadIdx.x / kWarp;
  const int64_t tiles = (k + kExpertK - 1) / kExpertK;
  float c[kN / 8][4];
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
  for (int s = 0; s < kExpertStages - 1; ++s) {
    if (s < tiles) {
      IssueExpertTile<kN, kTransposed>(x, w, rows, k, cols, row0, s * int64_t{kExpertK},
                                       stages + s * Smem::kStageElems);
    }
    CopyAsyncCommit();  // one group per tile, empty past the last
  }
  for (int64_t t = 0; t < tiles; ++t) {
    // Tile t + stages - 1 goes where tile t - 1 was (read by all before the last barrier).
    const int64_t next = t + kExpertStages - 1;
    if (next < tiles) {
      IssueExpertTile<kN, kTransposed>(x, w, rows, k, cols, row0, next * kExpertK,
                                       stages + (next % kExpertStages) * Smem::kStageElems);
    }
    CopyAsyncCommit();
    CopyAsyncWait<kExpertStages - 1>();  // tile t's group is complete
    __syncthreads();
    const uint16_t* stage = stages + (t % kExpertStages) * Smem::kStageElems;
    if constexpr (kTransposed) {
      MmaRowsTimesCols<kExpertK, kN>(stage, kExpertLd, 16 * warp, stage + Smem::kXElems,
                                     Smem::kWLd, c);
    } else {
      MmaRowsTimesRowsT<kExpertK, kN>(stage, kExpertLd, 16 * warp, stage + Smem::kXElems,
                                      kExpertLd, c);
    }
    __syncthreads();
  }
  CopyAsyncWait<0>();  // only empty groups remain; nothing writes the stages any more
  float* products = reinterpret_cast<float*>(smem);
  const MmaLane lane = ThisMmaLane();
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = 16 * warp + lane.g + 8 * (e / 2), col = 8 * j + 2 * lane.t + e % 2;
      products[r * Smem::kProductsLd + col] = c[j][e];
    }
  }
  __syncthreads();
  return products;
}

template <int kN>
__global__ void __launch_bounds__(kExpertThreads)
    ExpertsDownMmaKernel(const Bf16* x, const Bf16* a, const Bf16* g, int64_t rows, int64_t k,
                         int64_t blocks, int64_t width, float alpha, Bf16* h, Bf16* hs) {
  PMOL_DYNAMIC_SHARED(smem);
  const int64_t cols = blocks * width, row0 = int64_t{blockIdx.x} * kExpertRows;
  const float* products = ExpertProducts<kN, false>(x, a, rows, k, cols, row0, smem);
  constexpr int kLd = ExpertsSmem<kN, false>::kProductsLd;
  for (int64_t idx = threadIdx.x; idx < kExpertRows * cols; idx += blockDim.x) {
    const int64_t r = idx / cols, col = idx % cols, row = row0 + r;
    if (row >= rows) break;  // idx grows with r
    const float value = products[r * kLd + col];
    const float scale =
        g != nullptr ? alpha * static_cast<float>(g[row * blocks + col / width]) : alpha;
    if (h != nullptr) h[row * cols + col] = value;
    hs[row * cols + col] = scale * value;
  }
}

template <int kN>
__global__ void __launch_bounds__(kExpertThreads)
    ExpertsUpBackwardMmaKernel(const Bf16* dy, const Bf16* b, const Bf16* h, const Bf16* g,
                               int64_t rows, int64_t d, int64_t blocks, int64_t width,
                               float alpha, float* dg, Bf16* dh) {
  PMOL_DYNAMIC_SHARED(smem);
  const int64_t cols = blocks * width, row0 = int64_t{blockIdx.x} * kExpertRows;
  const float* products = ExpertProducts<kN, true>(dy, b, rows, d, cols, row0, smem);
  constexpr int kLd = ExpertsSmem<kN, true>::kProductsLd;
  for (int64_t idx = threadIdx.x; idx < kExpertRows * blocks; idx += blockDim.x) {
    const int64_t r = idx / blocks, blk = idx % blocks, row = row0 + r;
    if (row >= rows) break;
    const float* qi = products + r * kLd + blk * width;
    const int64_t at = row * cols + blk * width;
    float scale = alpha;
    if (g != nullptr) {
      float sum = 0.0f;
      for (int64_t j = 0; j < width; ++j) sum += qi[j] * static_cast<float>(h[at + j]);
      dg[row * blocks + blk] = alpha * sum;
      scale = alpha * static_cast<float>(g[row * blocks + blk]);
    }
    for (int64_t j = 0; j < width; ++j) dh[at + j] = scale * qi[j];
  }
}

// The narrowest kN (16, 32, 48, 64, 96 or 128) that holds cols columns.
int ExpertColumnsPadded(int64_t cols) {
  for (int n : {16, 32, 48, 64, 96, 128}) {
    if (cols <= n) return n;
  }
  return 0;
}

template <template <int> class Launch, typename... Args>
void ForPaddedColumns(int64_t cols, Args&&... args) {
  switch (ExpertColumnsPadded(cols)) {
    case 16: return Launch<16>::Run(args...);
    case 32: return Launch<32>::Run(args...);
    case 48: return Launch<48>::Run(args...);
    case 64: return Launch<64>::Run(args...);
    case 96: return Launch<96>::Run(args...);
    case 128: return Launch<128>::Run(args...);
    default: PMOL_CUDA_REQUIRE(false, "experts' tensor-core kernels: at most 128 columns");
  }
}

// Lets `kernel` have `bytes` of dynamic shared memory (above the 48 KiB default); once per
// kernel, from the static that holds the result.
template <typename Kernel>
bool OptInSharedMemory(Kernel kernel, size_t bytes) {
  const cudaError_t err = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  PMOL_CUDA_REQUIRE(err == cudaSuccess, "experts: dynamic shared memory refused");
  return true;
}

unsigned ExpertRowBlocks(int64_t rows) {
  const int64_t blocks = (rows + kExpertRows - 1) / kExpertRows;
  PMOL_CUDA_REQUIRE(blocks <= 0x7fffffff, "experts: too many rows");
  return static_cast<unsigned>(blocks);
}

template <int kN>
struct DownMma {
  static void Run(const Bf16* x, const Bf16* a, const Bf16* g, int64_t rows, int64_t k,
                  int64_t blocks, int64_t width, float alpha, Bf16* h, Bf16* hs,
                  cudaStream_t stream) {
    constexpr size_t kShared = ExpertsSmem<kN, false>::kBytes;
    static const bool opted_in = OptInSharedMemory(ExpertsDownMmaKernel<kN>, kShared);
    (void)opted_in;
    ExpertsDownMmaKernel<kN><<<ExpertRowBlocks(rows), kExpertThreads, kShared, stream>>>(
        x, a, g, rows, k, blocks, width, alpha, h, hs);
    PMOL_CUDA_CHECK_LAUNCH("ExpertsDownMmaKernel");
  }
};

template <int kN>
struct UpBackwardMma {
  static void Run(const Bf16* dy, const Bf16* b, const Bf16* h, const Bf16* g, int64_t rows,
                  int64_t d, int64_t blocks, int64_t width, float alpha, float* dg, Bf16* dh,
                  cudaStream_t stream) {
    constexpr size_t kShared = ExpertsSmem<kN, true>::kBytes;
    static const bool opted_in = OptInSharedMemory(ExpertsUpBackwardMmaKernel<kN>, kShared);
    (void)opted_in;
    ExpertsUpBackwardMmaKernel<kN><<<ExpertRowBlocks(rows), kExpertThreads, kShared, stream>>>(
        dy, b, h, g, rows, d, blocks, width, alpha, dg, dh);
    PMOL_CUDA_CHECK_LAUNCH("ExpertsUpBackwardMmaKernel");
  }
};

}  // namespace

bool ExpertsMmaApplies(int64_t k, int64_t cols, std::initializer_list<const void*> matrices) {
  if (k <= 0 || k % 8 != 0 || cols <= 0 || cols % 8 != 0 || ExpertColumnsPadded(cols) == 0) {
    return false;
  }
  for (const void* m : matrices) {
    if (reinterpret_cast<uintptr_t>(m) % 16 != 0) return false;
  }
  return true;
}

void LaunchExpertsDownMma(const Bf16* x, const Bf16* a, const Bf16* g, int64_t rows, int64_t k,
                          int64_t blocks, int64_t width, float alpha, Bf16* h, Bf16* hs,
                          cudaStream_t stream) {
  if (rows <= 0) return;
  ForPaddedColumns<DownMma>(blocks * width, x, a, g, rows, k, blocks, width, alpha, h, hs,
                            stream);
}

void LaunchExpertsUpBackwardMma(const Bf16* dy, const Bf16* b, const Bf16* h, const Bf16* g,
                                int64_t rows, int64_t d, int64_t blocks, int64_t width,
                                float alpha, float* dg, Bf16* dh, cudaStream_t stream) {
  if (rows <= 0) return;
  ForPaddedColumns<UpBackwardMma>(blocks * width, dy, b, h, g, rows, d, blocks, width, alpha,
                                  dg, dh, stream);
}

template <typename T>
void LaunchExpertsDownEpilogue(const Accum<T>* p, const T* g, int64_t rows, int64_t blocks,
                               int64_t width, Accum<T> alpha, T* h, T* hs, cudaStream_t stream) {
  const int64_t n = rows * blocks * width;
  if (n <= 0) return;
  ExpertsDownEpilogueKernel<T><<<GridFor(n), kThreads, 0, stream>>>(p, g, rows, blocks, width,
                                                                    alpha, h, hs);
  PMOL_CUDA_CHECK_LAUNCH("ExpertsDownEpilogueKernel");
}

template <typename T>
void LaunchExpertsUpBackwardEpilogue(const Accum<T>* q, const T* h, const T* g, int64_t rows,
                                     int64_t blocks, int64_t width, Accum<T> alpha,
                                     Accum<T>* dg, T* dh, cudaStream_t stream) {
  const int64_t n = rows * blocks;
  if (n <= 0) return;
  ExpertsUpBackwardEpilogueKernel<T><<<GridFor(n), kThreads, 0, stream>>>(
      q, h, g, rows, blocks, width, alpha, dg, dh);
  PMOL_CUDA_CHECK_LAUNCH("ExpertsUpBackwardEpilogueKernel");
}

#define PMOL_INSTANTIATE(T)                                                                   \
  template void LaunchExpertsDownEpilogue<T>(const Accum<T>*, const T*, int64_t, int64_t,     \
                                             int64_t, Accum<T>, T*, T*, cudaStream_t);        \
  template void LaunchExpertsUpBackwardEpilogue<T>(const Accum<T>*, const T*, const T*,       \
                                                   int64_t, int64_t, int64_t, Accum<T>,       \
                                                   Accum<T>*, T*, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
