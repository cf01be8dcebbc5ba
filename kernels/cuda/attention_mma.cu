// Launchers of the bf16 tensor-core attention kernels (attention_mma_kernels.cuh): grids
// of 4-warp blocks over 64-row tiles, the forward and dQ longest tiles first, shared
// memory opted in above the 48 KiB default where a head_dim needs it.
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/attention_mma_kernels.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <int kD>
void LaunchForward(const AttentionDims& dims, const Bf16* q, const Bf16* k, const Bf16* v,
                   Bf16* out, float* lse, cudaStream_t stream) {
  constexpr size_t kShared = ForwardMmaSharedBytes<kD>();
  const int64_t tiles = (dims.seq + kMmaTile - 1) / kMmaTile;
  PMOL_CUDA_REQUIRE(tiles <= 0x7fffffff, "attention: sequence too long");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(dims.q_heads),
                  static_cast<unsigned>(dims.batch));
  auto kernel = AttentionForwardMmaKernel<kD>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       static_cast<int>(kShared));
  kernel<<<grid, kMmaThreads, kShared, stream>>>(
      q, k, v, dims.key_holes, out, lse, dims.seq, dims.q_heads, dims.kv_heads,
      static_cast<float>(dims.scale * 1.4426950408889634));
  PMOL_CUDA_CHECK_LAUNCH("AttentionForwardMmaKernel");
}

template <int kD>
void LaunchBackward(const AttentionDims& dims, const Bf16* q, const Bf16* k, const Bf16* v,
                    const float* lse, const float* delta, const Bf16* dout, Bf16* dq,
                    Bf16* dk, Bf16* dv, cudaStream_t stream) {
  const int64_t tiles = (dims.seq + kMmaTile - 1) / kMmaTile;
  PMOL_CUDA_REQUIRE(tiles <= 0x7fffffff, "attention: sequence too long");
  const float scale = static_cast<float>(dims.scale);
  const float scale_log2 = static_cast<float>(dims.scale * 1.4426950408889634);

  constexpr size_t kDkDvShared = DkDvMmaSharedBytes<kD>();
  auto dkdv = AttentionDkDvMmaKernel<kD>;
  cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       static_cast<int>(kDkDvShared));
  const dim3 dkdv_grid(static_cast<unsigned>(tiles), static_cast<unsigned>(dims.kv_heads),
                       static_cast<unsigned>(dims.batch));
  dkdv<<<dkdv_grid, kMmaThreads, kDkDvShared, stream>>>(
      q, k, v, dims.key_holes, lse, delta, dout, dk, dv, dims.seq, dims.q_heads,
      dims.kv_heads, scale, scale_log2);
  PMOL_CUDA_CHECK_LAUNCH("AttentionDkDvMmaKernel");

  constexpr size_t kDqShared = DqMmaSharedBytes<kD>();
  auto dq_kernel = AttentionDqMmaKernel<kD>;
  cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       static_cast<int>(kDqShared));
  const dim3 dq_grid(static_cast<unsigned>(tiles), static_cast<unsigned>(dims.q_heads),
                     static_cast<unsigned>(dims.batch));
  dq_kernel<<<dq_grid, kMmaThreads, kDqShared, stream>>>(q, k, v, dims.key_holes, lse, delta,
                                                         dout, dq, dims.seq, dims.q_heads,
                                                         dims.kv_heads, scale, scale_log2);
  PMOL_CUDA_CHECK_LAUNCH("AttentionDqMmaKernel");
}

}  // namespace

void LaunchAttentionForwardMma(const AttentionDims& dims, const Bf16* q, const Bf16* k,
                               const Bf16* v, Bf16* out, float* lse, cudaStream_t stream) {
  switch (dims.head_dim) {
    case 32: return LaunchForward<32>(dims, q, k, v, out, lse, stream);
    case 64: return LaunchForward<64>(dims, q, k, v, out, lse, stream);
    case 128: return LaunchForward<128>(dims, q, k, v, out, lse, stream);
    default: PMOL_CUDA_REQUIRE(false, "tensor-core attention: head_dim must be 32, 64 or 128");
  }
}

void LaunchAttentionBackwardMma(const AttentionDims& dims, const Bf16* q, const Bf16* k,
                                const Bf16* v, const float* lse, const float* delta,
                                const Bf16* dout, Bf16* dq, Bf16* dk, Bf16* dv,
                                cudaStream_t stream) {
  switch (dims.head_dim) {
    case 32: return LaunchBackward<32>(dims, q, k, v, lse, delta, dout, dq, dk, dv, stream);
    case 64: return LaunchBackward<64>(dims, q, k, v, lse, delta, dout, dq, dk, dv, stream);
    case 128: return LaunchBackward<128>(dims, q, k, v, lse, delta, dout, dq, dk, dv, stream);
    default: PMOL_CUDA_REQUIRE(false, "tensor-core attention: head_dim must be 32, 64 or 128");
  }
}

}  // namespace pmol::cuda
