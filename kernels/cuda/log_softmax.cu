// Log-probability of a target token per row, and its gradient. logits: [rows, vocab].
//   lse[r]  = logsumexp(logits[r, :]) = m + log(sum_c exp(logits[r, c] - m)),  m = max
//   logp[r] = logits[r, t_r] - lse[r]            (0 when t_r < 0: an ignored row)
//   dlogits[r, c] = dlogp[r] * ([c == t_r] - exp(logits[r, c] - lse[r]))   (0 if t_r < 0)
// One block per row; the max and the sum are block tree reductions (numerically stable,
// deterministic). lse is written for every row, ignored ones included. Bf16 storage of
// logits and dlogits: the math is in f32, logp, lse and dlogp are f32, and each dlogits
// element is rounded once (in place over logits: each element is read, then written, by
// one thread).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

constexpr int kMaxRowThreads = 1024;

template <typename T>
__global__ void LogSoftmaxGatherKernel(const T* logits, const int32_t* targets, int64_t vocab,
                                       Accum<T>* logp, Accum<T>* lse) {
  using A = Accum<T>;
  __shared__ A shared[kWarp];
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  A m = -INFINITY;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) m = max(m, static_cast<A>(x[c]));
  m = BlockMax(m, shared);
  A sum = A(0);
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    sum += exp(static_cast<A>(x[c]) - m);
  }
  sum = BlockSum(sum, shared);
  if (threadIdx.x == 0) {
    const A row_lse = m + log(sum);
    lse[row] = row_lse;
    const int32_t t = targets[row];
    logp[row] = t >= 0 ? static_cast<A>(x[t]) - row_lse : A(0);
  }
}

template <typename T>
__global__ void LogSoftmaxGatherBackwardKernel(const T* logits, const int32_t* targets,
                                               const Accum<T>* lse, const Accum<T>* dlogp,
                                               int64_t vocab, T* dlogits) {
  using A = Accum<T>;
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  T* dx = dlogits + row * vocab;
  const int32_t t = targets[row];
  if (t < 0) {
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) dx[c] = A(0);
    return;
  }
  const A g = dlogp[row];
  const A row_lse = lse[row];
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const A p = exp(static_cast<A>(x[c]) - row_lse);
    dx[c] = g * ((c == t ? A(1) : A(0)) - p);
  }
}

int Threads(int64_t vocab) {
  int threads = RowThreads(vocab);
  return threads > kMaxRowThreads ? kMaxRowThreads : threads;
}

}  // namespace

template <typename T>
void LaunchLogSoftmaxGather(const T* logits, const int32_t* targets, int64_t rows,
                            int64_t vocab, Accum<T>* logp, Accum<T>* lse, cudaStream_t stream) {
  if (rows <= 0) return;
  PMOL_CUDA_REQUIRE(vocab > 0, "LogSoftmaxGather: empty vocabulary");
  PMOL_CUDA_REQUIRE(rows <= 0x7fffffff, "LogSoftmaxGather: too many rows for one grid");
  LogSoftmaxGatherKernel<T><<<static_cast<unsigned>(rows), Threads(vocab), 0, stream>>>(
      logits, targets, vocab, logp, lse);
  PMOL_CUDA_CHECK_LAUNCH("LogSoftmaxGatherKernel");
}

template <typename T>
void LaunchLogSoftmaxGatherBackward(const T* logits, const int32_t* targets,
                                    const Accum<T>* lse, const Accum<T>* dlogp, int64_t rows,
                                    int64_t vocab, T* dlogits, cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return;
  PMOL_CUDA_REQUIRE(rows <= 0x7fffffff, "LogSoftmaxGather: too many rows for one grid");
  LogSoftmaxGatherBackwardKernel<T><<<static_cast<unsigned>(rows), Threads(vocab), 0, stream>>>(
      logits, targets, lse, dlogp, vocab, dlogits);
  PMOL_CUDA_CHECK_LAUNCH("LogSoftmaxGatherBackwardKernel");
}

#define PMOL_INSTANTIATE(T)                                                                 \
  template void LaunchLogSoftmaxGather<T>(const T*, const int32_t*, int64_t, int64_t,       \
                                          Accum<T>*, Accum<T>*, cudaStream_t);              \
  template void LaunchLogSoftmaxGatherBackward<T>(const T*, const int32_t*, const Accum<T>*, \
                                                  const Accum<T>*, int64_t, int64_t, T*,    \
                                                  cudaStream_t);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
PMOL_INSTANTIATE(Bf16)
#undef PMOL_INSTANTIATE

}  // namespace pmol::cuda
