// Deterministic column sums of a [rows, cols] matrix given by a functor value(r, c):
//   out[c] += sum_r value(r, c)
// without atomics. Stage 1: blocks of 32 columns x 8 row lanes; block (cb, chunk) sums
// its chunk of rows per column (each lane a strided subset in row order, then the 8
// lanes in lane order) into partial[chunk, c]. Stage 2: out[c] += sum over chunks in
// chunk order. The chunking depends only on (rows, cols), never on the device, so the
// result is bit-for-bit reproducible. With one chunk, stage 1 adds straight into out.
// T is the storage type of the operands (float, double, Bf16); out, value() and every
// sum, partial and scratch element are of Accum<T> (out is a parameter gradient: f32 for
// Bf16 operands).
// The scratch holds ColumnReduceScratchBytes(sizeof(Accum<T>), rows, cols) bytes.
#ifndef PMOL_KERNELS_CUDA_COLUMN_REDUCE_CUH_
#define PMOL_KERNELS_CUDA_COLUMN_REDUCE_CUH_

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {

constexpr int kColTile = 32;
constexpr int kRowLanes = 8;
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kTargetBlocks = 512;

inline int64_t ColumnReduceChunks(int64_t rows, int64_t cols) {
  const int64_t col_blocks = (cols + kColTile - 1) / kColTile;
  int64_t chunks = (kTargetBlocks + col_blocks - 1) / col_blocks;
  const int64_t max_chunks = (rows + kMinChunkRows - 1) / kMinChunkRows;
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks < 1) chunks = 1;
  return chunks;
}

inline size_t ColumnReduceScratchBytes(size_t accum_size, int64_t rows, int64_t cols) {
  const int64_t chunks = ColumnReduceChunks(rows, cols);
  return chunks > 1 ? static_cast<size_t>(chunks * cols) * accum_size : 0;
}

template <typename T, typename Value>
__global__ void ColumnPartialKernel(Value value, int64_t rows, int64_t cols, int64_t chunk_rows,
                                    Accum<T>* partial, Accum<T>* out) {
  using A = Accum<T>;
  __shared__ A sums[kRowLanes][kColTile + 1];
  const int64_t c = blockIdx.x * int64_t{kColTile} + threadIdx.x;
  const int64_t begin = blockIdx.y * chunk_rows;
  int64_t end = begin + chunk_rows;
  if (end > rows) end = rows;
  A acc = A(0);
  if (c < cols) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) acc += value(r, c);
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    A total = sums[0][threadIdx.x];
    for (int lane = 1; lane < kRowLanes; ++lane) total += sums[lane][threadIdx.x];
    if (partial != nullptr) {
      partial[blockIdx.y * cols + c] = total;
    } else {
      out[c] += total;
    }
  }
}

template <typename T>
__global__ void ColumnFinishKernel(const Accum<T>* partial, int64_t chunks, int64_t cols,
                                   Accum<T>* out) {
  using A = Accum<T>;
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  A total = A(0);
  for (int64_t k = 0; k < chunks; ++k) total += partial[k * cols + c];
  out[c] += total;
}

// `scratch` holds at least ColumnReduceScratchBytes(sizeof(Accum<T>), rows, cols) bytes.
template <typename T, typename Value>
void LaunchColumnReduce(Value value, int64_t rows, int64_t cols, Accum<T>* out, void* scratch,
                        cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t chunks = ColumnReduceChunks(rows, cols);
  const int64_t chunk_rows = (rows + chunks - 1) / chunks;
  const int64_t col_blocks = (cols + kColTile - 1) / kColTile;
  Accum<T>* partial = chunks > 1 ? static_cast<Accum<T>*>(scratch) : nullptr;
  PMOL_CUDA_REQUIRE(chunks == 1 || scratch != nullptr, "column reduction needs scratch");
  PMOL_CUDA_REQUIRE(chunks <= 65535, "too many row chunks");
  dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
  dim3 block(kColTile, kRowLanes);
  ColumnPartialKernel<T, Value><<<grid, block, 0, stream>>>(value, rows, cols, chunk_rows,
                                                            partial, out);
  PMOL_CUDA_CHECK_LAUNCH("ColumnPartialKernel");
  if (chunks > 1) {
    const unsigned blocks = static_cast<unsigned>((cols + kThreads - 1) / kThreads);
    ColumnFinishKernel<T><<<blocks, kThreads, 0, stream>>>(partial, chunks, cols, out);
    PMOL_CUDA_CHECK_LAUNCH("ColumnFinishKernel");
  }
}

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_COLUMN_REDUCE_CUH_
