// Causal grouped-query attention, forward, flash-style (no [T, T] score matrix):
//   S = scale * Q K^T (key j visible to query i iff j <= i and j is outside i's key
//   hole, kernels/backend.h),  P = softmax_row(S),
//   out = P V,  lse[b, h, i] = logsumexp_j S[i, j]
// Query head h reads kv head h / (Hq / Hkv). One block per (32-query tile, head, batch);
// it walks the key tiles 0..(its own tile), less those all its rows' key holes cover,
// with the online softmax: per row a running max
// m and sum l; each new tile rescales the accumulated output by exp(m_old - m_new).
// Blocks are issued longest-first (the last query tiles see the most keys).
// Arithmetic is in Accum<T> on CUDA cores (f32 for Bf16 storage: tiles widened on load,
// out rounded once, lse in f32); rows finish with out = acc / l, lse = m + log(l).
// bf16 with head_dim 32, 64 or 128 runs on tensor cores instead (attention_mma_forward.cu).
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

// A: the compute type of the shared tiles.
template <typename A>
size_t ForwardSharedBytes(int head_dim) {
  const int ld = head_dim + 1;
  return static_cast<size_t>(3 * kTile * ld + kTile * (kTile + 1)) * sizeof(A);
}

template <typename T, int kMaxD>
__global__ void __launch_bounds__(kAttnThreads)
    AttentionForwardKernel(const T* q, const T* k, const T* v, const int32_t* holes, T* out,
                           Accum<T>* lse, int64_t seq, int64_t q_heads, int64_t kv_heads,
                           int head_dim, Accum<T> scale) {
  using A = Accum<T>;
  constexpr int kPerLane = kMaxD / kRowLanesAttn;
  PMOL_DYNAMIC_SHARED(shared_raw);
  const int ld = head_dim + 1;
  A* s_q = reinterpret_cast<A*>(shared_raw);
  A* s_k = s_q + kTile * ld;
  A* s_v = s_k + kTile * ld;
  A* s_p = s_v + kTile * ld;  // [kTile][kTile + 1]

  const int64_t q_tile = gridDim.x - 1 - blockIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t hk = h / (q_heads / kv_heads);
  const int row = threadIdx.x / kRowLanesAttn;
  const int lane = threadIdx.x % kRowLanesAttn;
  const int64_t q0 = q_tile * kTile;
  const int64_t q_pos = q0 + row;
  const KeyHole hole = LoadKeyHole(holes, b, seq, q_pos);

  LoadTile(q, b, q0, seq, q_heads, h, head_dim, ld, s_q);

  A acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = A(0);
  A m = -INFINITY;
  A l = A(0);

  for (int64_t k_tile = 0; k_tile <= q_tile; ++k_tile) {
    const int64_t k0 = k_tile * kTile;
    // A key tile inside every row's hole adds nothing (holes is the same for all threads).
    if (holes != nullptr && __syncthreads_and(HidesTile(hole, k0, q_pos, seq))) continue;
    __syncthreads();  // the previous tile's K, V, P are no longer read
    LoadTile(k, b, k0, seq, kv_heads, hk, head_dim, ld, s_k);
    LoadTile(v, b, k0, seq, kv_heads, hk, head_dim, ld, s_v);
    __syncthreads();

    A s[kKeysPerLane];
    A tile_max = -INFINITY;
#pragma unroll
    for (int i = 0; i < kKeysPerLane; ++i) {
      const int c = lane + kRowLanesAttn * i;
      const int64_t k_pos = k0 + c;
      const bool visible = k_pos <= q_pos && k_pos < seq && !hole.Hides(k_pos, q_pos);
      s[i] = visible ? scale * Dot(s_q + row * ld, s_k + c * ld, head_dim) : A(-INFINITY);
      tile_max = max(tile_max, s[i]);
    }
    tile_max = RowMax(tile_max);
    const A m_new = max(m, tile_max);
    // A row with no visible key yet (only padding rows) keeps m = -inf and adds nothing.
    const A correction = m_new == A(-INFINITY) ? A(1) : exp(m - m_new);
    A tile_sum = A(0);
#pragma unroll
    for (int i = 0; i < kKeysPerLane; ++i) {
      const A p = m_new == A(-INFINITY) ? A(0) : exp(s[i] - m_new);
      tile_sum += p;
      s_p[row * (kTile + 1) + lane + kRowLanesAttn * i] = p;
    }
    tile_sum = RowSum(tile_sum);
    l = l * correction + tile_sum;
    m = m_new;
    __syncwarp();  // a row's P is written and read by the same 8 lanes of one warp

#pragma unroll
    for (int j = 0; j < kPerLane; ++j) acc[j] *= correction;
    for (int c = 0; c < kTile; ++c) {
      const A p = s_p[row * (kTile + 1) + c];
      const A* v_row = s_v + c * ld;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + kRowLanesAttn * j;
        if (d < head_dim) acc[j] += p * v_row[d];
      }
    }
  }

  if (q_pos < seq) {
    const A inv_l = A(1) / l;
    T* out_row = out + ((b * seq + q_pos) * q_heads + h) * head_dim;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + kRowLanesAttn * j;
      if (d < head_dim) out_row[d] = acc[j] * inv_l;
    }
    if (lane == 0) lse[(b * q_heads + h) * seq + q_pos] = m + log(l);
  }
}

}  // namespace

int64_t AttentionMaxHeadDim(size_t accum_size) { return accum_size == 4 ? 256 : 128; }

template <typename T>
void LaunchAttentionForward(const AttentionDims& dims, const T* q, const T* k, const T* v,
                            T* out, Accum<T>* lse, cudaStream_t stream) {
  using A = Accum<T>;
  if (dims.batch <= 0 || dims.seq <= 0 || dims.q_heads <= 0) return;
  CheckAttentionDims(dims, sizeof(A));
  if constexpr (std::is_same_v<T, Bf16>) {
    if (TensorCoreAttentionApplies(dims, {q, k, v, out})) {
      return LaunchAttentionForwardMma(dims, q, k, v, out, lse, stream);
    }
  }
  const int head_dim = static_cast<int>(dims.head_dim);
  const size_t shared = ForwardSharedBytes<A>(head_dim);
  const int64_t tiles = (dims.seq + kTile - 1) / kTile;
  PMOL_CUDA_REQUIRE(tiles <= 0x7fffffff, "attention: sequence too long");
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(dims.q_heads),
            static_cast<unsigned>(dims.batch));
  DispatchHeadDim<A>(dims.head_dim, [&]<int kMaxD>() {
    auto kernel = AttentionForwardKernel<T, kMaxD>;
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(shared));
    kernel<<<grid, kAttnThreads, shared, stream>>>(q, k, v, dims.key_holes, out, lse, dims.seq,
                                                   dims.q_heads,
                                                   dims.kv_heads, head_dim,
                                                   static_cast<A>(dims.scale));
    PMOL_CUDA_CHECK_LAUNCH("AttentionForwardKernel");
  });
}

template void LaunchAttentionForward<float>(const AttentionDims&, const float*, const float*,
                                            const float*, float*, float*, cudaStream_t);
template void LaunchAttentionForward<double>(const AttentionDims&, const double*,
                                             const double*, const double*, double*, double*,
                                             cudaStream_t);
template void LaunchAttentionForward<Bf16>(const AttentionDims&, const Bf16*, const Bf16*,
                                           const Bf16*, Bf16*, float*, cudaStream_t);

}  // namespace pmol::cuda
