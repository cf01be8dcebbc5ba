// Rotary position embedding, HF "rotate_half" convention, in place on x
// [tokens, heads, head_dim]; pairs (j, j + d/2) of each head rotate by the angle of the
// token's position p (cos/sin tables [*, d/2], row p):
//   x'_j       = x_j cos - x_{j+d/2} sin
//   x'_{j+d/2} = x_{j+d/2} cos + x_j sin
// inverse = true uses -sin (rotation by -angle: the backward of the forward rotation).
// One thread per (token, head, j < d/2); each pair is read and written by one thread.
// Bf16 storage of x: the rotation is in f32 with f32 cos/sin tables, and each element is
// rounded once when written back.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <typename T>
__global__ void RopeKernel(T* x, int64_t tokens, int64_t heads, int64_t head_dim,
                           const Accum<T>* cos, const Accum<T>* sin, const int32_t* positions,
                           Accum<T> sign) {
  using A = Accum<T>;
  const int64_t half = head_dim / 2;
  const int64_t n = tokens * heads * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = i % half;
    const int64_t token_head = i / half;
    const int64_t token = token_head / heads;
    const int64_t p = positions[token];
    const A c = cos[p * half + j];
    const A s = sign * sin[p * half + j];
    T* xh = x + token_head * head_dim;
    const A a = xh[j];
    const A b = xh[j + half];
    xh[j] = a * c - b * s;
    xh[j + half] = b * c + a * s;
  }
}

}  // namespace

template <typename T>
void LaunchApplyRope(T* x, int64_t tokens, int64_t heads, int64_t head_dim,
                     const Accum<T>* cos, const Accum<T>* sin, const int32_t* positions,
                     bool inverse, cudaStream_t stream) {
  using A = Accum<T>;
  PMOL_CUDA_REQUIRE(head_dim % 2 == 0, "ApplyRope: head_dim must be even");
  const int64_t n = tokens * heads * (head_dim / 2);
  if (n <= 0) return;
  RopeKernel<T><<<GridFor(n), kThreads, 0, stream>>>(x, tokens, heads, head_dim, cos, sin,
                                                     positions, inverse ? A(-1) : A(1));
  PMOL_CUDA_CHECK_LAUNCH("RopeKernel");
}

template void LaunchApplyRope<float>(float*, int64_t, int64_t, int64_t, const float*,
                                     const float*, const int32_t*, bool, cudaStream_t);
template void LaunchApplyRope<double>(double*, int64_t, int64_t, int64_t, const double*,
                                      const double*, const int32_t*, bool, cudaStream_t);
template void LaunchApplyRope<Bf16>(Bf16*, int64_t, int64_t, int64_t, const float*,
                                    const float*, const int32_t*, bool, cudaStream_t);

}  // namespace pmol::cuda
