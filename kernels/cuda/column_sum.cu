// SumRows: dbias[c] += sum_r dy[r, c], the bias gradient. Deterministic two-stage column
// reduction (column_reduce.cuh): no atomics, same bits on every run. Bf16 dy: the sums
// and dbias are f32 (a parameter gradient, AccumDType).
#include "kernels/cuda/column_reduce.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
struct RowValue {
  const T* dy;
  int64_t cols;
  __device__ Accum<T> operator()(int64_t r, int64_t c) const { return dy[r * cols + c]; }
};

}  // namespace

size_t SumRowsScratchBytes(size_t accum_size, int64_t rows, int64_t cols) {
  return ColumnReduceScratchBytes(accum_size, rows, cols);
}

template <typename T>
void LaunchSumRows(const T* dy, int64_t rows, int64_t cols, Accum<T>* dbias, void* scratch,
                   cudaStream_t stream) {
  LaunchColumnReduce<T>(RowValue<T>{dy, cols}, rows, cols, dbias, scratch, stream);
}

template void LaunchSumRows<float>(const float*, int64_t, int64_t, float*, void*, cudaStream_t);
template void LaunchSumRows<double>(const double*, int64_t, int64_t, double*, void*,
                                    cudaStream_t);
template void LaunchSumRows<Bf16>(const Bf16*, int64_t, int64_t, float*, void*, cudaStream_t);

}  // namespace pmol::cuda
