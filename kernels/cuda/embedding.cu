// Token embedding. table: [vocab, dim], ids: [n], out/dout: [n, dim].
//   forward:  out[i, :] = table[ids[i], :]
//   backward: dtable[v, :] += sum_{i : ids[i] = v} dout[i, :]
// The backward is deterministic: the (id, position) pairs are sorted by id with a stable
// radix sort (CUB), and one block per run of equal ids sums its rows in position order
// and adds the sum once into dtable. No atomics, so the bits do not depend on
// scheduling. (A very frequent id is summed by one block; fine at the sizes of a batch.)
// Bf16 storage: the forward copies the bits; the backward sums a run in f32 and adds the
// sum into dtable once: a bf16 dtable (an activation gradient) is rounded once, an f32 one
// (the weight gradient) is not rounded at all.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

constexpr size_t kAlign = 256;

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

template <typename T>
__global__ void EmbeddingForwardKernel(const T* table, const int32_t* ids, int64_t n,
                                       int64_t dim, T* out) {
  const int64_t total = n * dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / dim;
    const int64_t c = i - row * dim;
    out[i] = table[static_cast<int64_t>(ids[row]) * dim + c];
  }
}

__global__ void IotaKernel(int32_t* values, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    values[i] = static_cast<int32_t>(i);
  }
}

// Block p handles sorted position p if it starts a run of equal ids.
template <typename T, typename Table>
__global__ void EmbeddingSegmentSumKernel(const T* dout, const int32_t* sorted_ids,
                                          const int32_t* sorted_pos, int64_t n, int64_t dim,
                                          Table* dtable) {
  const int64_t p = blockIdx.x;
  const int32_t id = sorted_ids[p];
  if (p > 0 && sorted_ids[p - 1] == id) return;
  int64_t end = p + 1;
  while (end < n && sorted_ids[end] == id) ++end;
  using A = Accum<T>;
  Table* dst = dtable + static_cast<int64_t>(id) * dim;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    A acc = A(0);
    for (int64_t q = p; q < end; ++q) {
      acc += static_cast<A>(dout[static_cast<int64_t>(sorted_pos[q]) * dim + c]);
    }
    dst[c] = static_cast<A>(dst[c]) + acc;
  }
}

size_t SortTempBytes(int64_t n) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr),
                                  static_cast<const int32_t*>(nullptr),
                                  static_cast<int32_t*>(nullptr), static_cast<int>(n));
  return bytes;
}

}  // namespace

template <typename T>
void LaunchEmbeddingForward(const T* table, const int32_t* ids, int64_t n, int64_t dim, T* out,
                            cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return;
  EmbeddingForwardKernel<T><<<GridFor(n * dim), kThreads, 0, stream>>>(table, ids, n, dim, out);
  PMOL_CUDA_CHECK_LAUNCH("EmbeddingForwardKernel");
}

size_t EmbeddingBackwardScratchBytes(int64_t n) {
  if (n <= 0) return 0;
  const size_t ints = AlignUp(static_cast<size_t>(n) * sizeof(int32_t));
  return 3 * ints + AlignUp(SortTempBytes(n));
}

template <typename T, typename Table>
void LaunchEmbeddingBackward(const T* dout, const int32_t* ids, int64_t n, int64_t dim,
                             Table* dtable, void* scratch, cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return;
  PMOL_CUDA_REQUIRE(n <= 0x7fffffff, "EmbeddingBackward: too many ids");
  PMOL_CUDA_REQUIRE(scratch != nullptr, "EmbeddingBackward needs scratch");
  const size_t ints = AlignUp(static_cast<size_t>(n) * sizeof(int32_t));
  char* base = static_cast<char*>(scratch);
  int32_t* sorted_ids = reinterpret_cast<int32_t*>(base);
  int32_t* positions = reinterpret_cast<int32_t*>(base + ints);
  int32_t* sorted_pos = reinterpret_cast<int32_t*>(base + 2 * ints);
  void* temp = base + 3 * ints;
  size_t temp_bytes = SortTempBytes(n);

  IotaKernel<<<GridFor(n), kThreads, 0, stream>>>(positions, n);
  PMOL_CUDA_CHECK_LAUNCH("IotaKernel");
  cudaError_t err = cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, sorted_ids,
                                                    positions, sorted_pos,
                                                    static_cast<int>(n), 0, 32, stream);
  PMOL_CUDA_REQUIRE(err == cudaSuccess, cudaGetErrorString(err));
  int threads = RowThreads(dim);
  if (threads > kThreads) threads = kThreads;
  EmbeddingSegmentSumKernel<T, Table><<<static_cast<unsigned>(n), threads, 0, stream>>>(
      dout, sorted_ids, sorted_pos, n, dim, dtable);
  PMOL_CUDA_CHECK_LAUNCH("EmbeddingSegmentSumKernel");
}

#define PMOL_INSTANTIATE(T)                                                                   \
  template void LaunchEmbeddingForward<T>(const T*, const int32_t*, int64_t, int64_t, T*,     \
                                          cudaStream_t);                                      \
  template void LaunchEmbeddingBackward<T, T>(const T*, const int32_t*, int64_t, int64_t, T*, \
                                              void*, cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE
template void LaunchEmbeddingBackward<Bf16, float>(const Bf16*, const int32_t*, int64_t, int64_t,
                                                   float*, void*, cudaStream_t);

}  // namespace pmol::cuda
