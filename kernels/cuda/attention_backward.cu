// Causal grouped-query attention, backward (FlashAttention-2 style recomputation from
// lse; no [T, T] matrix is stored). With P = exp(scale * Q K^T - lse) on visible pairs
// (j <= i, j outside query i's key hole; kernels/backend.h):
//   Delta_i = sum_d dO[i, d] * O[i, d]                        (per query row)
//   dP = dO V^T,  dS = P * (dP - Delta)
//   dV = sum over query heads of the group of P^T dO
//   dK = scale * sum over query heads of the group of dS^T Q
//   dQ = scale * dS K
// Three launches: Delta (one warp per row, into scratch [B, Hq, T]); dK/dV with one
// block per (32-key tile, kv head, batch) that loops over the group's query heads and
// the query tiles at or after its keys (less those whose key holes all cover its keys),
// accumulating in registers; dQ with one block
// per (32-query tile, head, batch) over the key tiles up to its own. Every output
// element is summed by one thread in a fixed order: no atomics, deterministic.
// Arithmetic, shared tiles, lse and Delta are in Accum<T> (f32 for Bf16 storage: q, k, v,
// out, dout widened on load; dq, dk, dv rounded once). bf16 with head_dim 32, 64 or 128
// runs dK/dV and dQ on tensor cores instead (attention_mma_backward.cu), after Delta.
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

// A: the compute type of the shared tiles.
template <typename A>
size_t DkDvSharedBytes(int head_dim) {
  const int ld = head_dim + 1;
  return static_cast<size_t>(4 * kTile * ld + 2 * kTile * (kTile + 1) + 2 * kTile) * sizeof(A) +
         2 * kTile * sizeof(int32_t);  // the query tile's key holes
}

template <typename A>
size_t DqSharedBytes(int head_dim) {
  const int ld = head_dim + 1;
  return static_cast<size_t>(4 * kTile * ld + kTile * (kTile + 1)) * sizeof(A);
}

// delta[(b*Hq + h)*T + t] = dot(dout[b, t, h, :], out[b, t, h, :]); one warp per row.
template <typename T>
__global__ void AttentionDeltaKernel(const T* out, const T* dout, int64_t batch, int64_t seq,
                                     int64_t q_heads, int head_dim, Accum<T>* delta) {
  using A = Accum<T>;
  const int64_t warps_per_block = blockDim.x / kWarp;
  const int64_t row = blockIdx.x * warps_per_block + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= batch * seq * q_heads) return;
  const T* o = out + row * head_dim;
  const T* g = dout + row * head_dim;
  A acc = A(0);
  for (int d = lane; d < head_dim; d += kWarp) {
    acc += static_cast<A>(o[d]) * static_cast<A>(g[d]);
  }
  acc = WarpSum(acc);
  if (lane == 0) {
    // row = (b * seq + t) * q_heads + h  ->  [b, h, t]
    const int64_t h = row % q_heads;
    const int64_t bt = row / q_heads;
    const int64_t t = bt % seq;
    const int64_t b = bt / seq;
    delta[(b * q_heads + h) * seq + t] = acc;
  }
}

template <typename T, int kMaxD>
__global__ void __launch_bounds__(kAttnThreads)
    AttentionDkDvKernel(const T* q, const T* k, const T* v, const int32_t* holes,
                        const Accum<T>* lse, const Accum<T>* delta, const T* dout, T* dk, T* dv,
                        int64_t seq, int64_t q_heads, int64_t kv_heads, int head_dim,
                        Accum<T> scale) {
  using A = Accum<T>;
  constexpr int kPerLane = kMaxD / kRowLanesAttn;
  PMOL_DYNAMIC_SHARED(shared_raw);
  const int ld = head_dim + 1;
  A* s_k = reinterpret_cast<A*>(shared_raw);
  A* s_v = s_k + kTile * ld;
  A* s_q = s_v + kTile * ld;
  A* s_do = s_q + kTile * ld;
  A* s_p = s_do + kTile * ld;            // [key][query], stride kTile + 1
  A* s_ds = s_p + kTile * (kTile + 1);   // [key][query]
  A* s_lse = s_ds + kTile * (kTile + 1);
  A* s_delta = s_lse + kTile;
  int32_t* s_hole = reinterpret_cast<int32_t*>(s_delta + kTile);  // [query][begin, end]

  const int64_t k_tile = blockIdx.x;
  const int64_t hk = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t group = q_heads / kv_heads;
  const int64_t q_tiles = (seq + kTile - 1) / kTile;
  const int key = threadIdx.x / kRowLanesAttn;  // key row of the tile this thread owns
  const int lane = threadIdx.x % kRowLanesAttn;
  const int64_t k0 = k_tile * kTile;
  const int64_t k_pos = k0 + key;

  LoadTile(k, b, k0, seq, kv_heads, hk, head_dim, ld, s_k);
  LoadTile(v, b, k0, seq, kv_heads, hk, head_dim, ld, s_v);

  A acc_dk[kPerLane];
  A acc_dv[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc_dk[j] = acc_dv[j] = A(0);

  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    for (int64_t q_tile = k_tile; q_tile < q_tiles; ++q_tile) {
      const int64_t q0 = q_tile * kTile;
      __syncthreads();  // the previous Q, dO, lse, delta are no longer read
      LoadTile(q, b, q0, seq, q_heads, h, head_dim, ld, s_q);
      LoadTile(dout, b, q0, seq, q_heads, h, head_dim, ld, s_do);
      if (threadIdx.x < kTile) {
        const int64_t t = q0 + threadIdx.x;
        s_lse[threadIdx.x] = t < seq ? lse[(b * q_heads + h) * seq + t] : A(0);
        s_delta[threadIdx.x] = t < seq ? delta[(b * q_heads + h) * seq + t] : A(0);
        const KeyHole hole = LoadKeyHole(holes, b, seq, t);
        s_hole[2 * threadIdx.x] = static_cast<int32_t>(hole.begin);
        s_hole[2 * threadIdx.x + 1] = static_cast<int32_t>(hole.end);
      }
      __syncthreads();
      if (holes != nullptr) {  // skip a query tile whose holes all cover this key tile
        bool hidden = true;
#pragma unroll
        for (int i = 0; i < kKeysPerLane; ++i) {
          const int c = lane + kRowLanesAttn * i;
          const KeyHole hole{s_hole[2 * c], s_hole[2 * c + 1]};
          hidden = hidden && HidesTile(hole, k0, q0 + c, seq);
        }
        if (__syncthreads_and(hidden)) continue;
      }

#pragma unroll
      for (int i = 0; i < kKeysPerLane; ++i) {
        const int c = lane + kRowLanesAttn * i;  // query row of the tile
        const int64_t q_pos = q0 + c;
        const KeyHole hole{s_hole[2 * c], s_hole[2 * c + 1]};
        const bool visible =
            k_pos <= q_pos && q_pos < seq && k_pos < seq && !hole.Hides(k_pos, q_pos);
        A p = A(0);
        A ds = A(0);
        if (visible) {
          const A s = scale * Dot(s_q + c * ld, s_k + key * ld, head_dim);
          p = exp(s - s_lse[c]);
          const A dp = Dot(s_do + c * ld, s_v + key * ld, head_dim);
          ds = p * (dp - s_delta[c]);
        }
        s_p[key * (kTile + 1) + c] = p;
        s_ds[key * (kTile + 1) + c] = ds;
      }
      __syncwarp();  // a key row's P, dS are written and read by the same 8 lanes

      for (int c = 0; c < kTile; ++c) {
        const A p = s_p[key * (kTile + 1) + c];
        const A ds = s_ds[key * (kTile + 1) + c];
        const A* do_row = s_do + c * ld;
        const A* q_row = s_q + c * ld;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
          const int d = lane + kRowLanesAttn * j;
          if (d < head_dim) {
            acc_dv[j] += p * do_row[d];
            acc_dk[j] += ds * q_row[d];
          }
        }
      }
    }
  }

  if (k_pos < seq) {
    const int64_t offset = ((b * seq + k_pos) * kv_heads + hk) * head_dim;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + kRowLanesAttn * j;
      if (d < head_dim) {
        dk[offset + d] = scale * acc_dk[j];
        dv[offset + d] = acc_dv[j];
      }
    }
  }
}

template <typename T, int kMaxD>
__global__ void __launch_bounds__(kAttnThreads)
    AttentionDqKernel(const T* q, const T* k, const T* v, const int32_t* holes,
                      const Accum<T>* lse, const Accum<T>* delta, const T* dout, T* dq,
                      int64_t seq, int64_t q_heads, int64_t kv_heads, int head_dim,
                      Accum<T> scale) {
  using A = Accum<T>;
  constexpr int kPerLane = kMaxD / kRowLanesAttn;
  PMOL_DYNAMIC_SHARED(shared_raw);
  const int ld = head_dim + 1;
  A* s_q = reinterpret_cast<A*>(shared_raw);
  A* s_do = s_q + kTile * ld;
  A* s_k = s_do + kTile * ld;
  A* s_v = s_k + kTile * ld;
  A* s_ds = s_v + kTile * ld;  // [query][key], stride kTile + 1

  const int64_t q_tile = gridDim.x - 1 - blockIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t hk = h / (q_heads / kv_heads);
  const int row = threadIdx.x / kRowLanesAttn;
  const int lane = threadIdx.x % kRowLanesAttn;
  const int64_t q0 = q_tile * kTile;
  const int64_t q_pos = q0 + row;

  LoadTile(q, b, q0, seq, q_heads, h, head_dim, ld, s_q);
  LoadTile(dout, b, q0, seq, q_heads, h, head_dim, ld, s_do);
  const A row_lse = q_pos < seq ? lse[(b * q_heads + h) * seq + q_pos] : A(0);
  const A row_delta = q_pos < seq ? delta[(b * q_heads + h) * seq + q_pos] : A(0);
  const KeyHole hole = LoadKeyHole(holes, b, seq, q_pos);

  A acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = A(0);

  for (int64_t k_tile = 0; k_tile <= q_tile; ++k_tile) {
    const int64_t k0 = k_tile * kTile;
    // A key tile inside every row's hole adds nothing (holes is the same for all threads).
    if (holes != nullptr && __syncthreads_and(HidesTile(hole, k0, q_pos, seq))) continue;
    __syncthreads();  // the previous K, V, dS are no longer read
    LoadTile(k, b, k0, seq, kv_heads, hk, head_dim, ld, s_k);
    LoadTile(v, b, k0, seq, kv_heads, hk, head_dim, ld, s_v);
    __syncthreads();

#pragma unroll
    for (int i = 0; i < kKeysPerLane; ++i) {
      const int c = lane + kRowLanesAttn * i;
      const int64_t k_pos = k0 + c;
      const bool visible =
          k_pos <= q_pos && q_pos < seq && k_pos < seq && !hole.Hides(k_pos, q_pos);
      A ds = A(0);
      if (visible) {
        const A s = scale * Dot(s_q + row * ld, s_k + c * ld, head_dim);
        const A p = exp(s - row_lse);
        const A dp = Dot(s_do + row * ld, s_v + c * ld, head_dim);
        ds = p * (dp - row_delta);
      }
      s_ds[row * (kTile + 1) + c] = ds;
    }
    __syncwarp();

    for (int c = 0; c < kTile; ++c) {
      const A ds = s_ds[row * (kTile + 1) + c];
      const A* k_row = s_k + c * ld;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + kRowLanesAttn * j;
        if (d < head_dim) acc[j] += ds * k_row[d];
      }
    }
  }

  if (q_pos < seq) {
    T* dq_row = dq + ((b * seq + q_pos) * q_heads + h) * head_dim;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + kRowLanesAttn * j;
      if (d < head_dim) dq_row[d] = scale * acc[j];
    }
  }
}

}  // namespace

size_t AttentionBackwardScratchBytes(size_t accum_size, const AttentionDims& dims) {
  return static_cast<size_t>(dims.batch * dims.q_heads * dims.seq) * accum_size;
}

template <typename T>
void LaunchAttentionBackward(const AttentionDims& dims, const T* q, const T* k, const T* v,
                             const T* out, const Accum<T>* lse, const T* dout, T* dq, T* dk,
                             T* dv, void* scratch, cudaStream_t stream) {
  using A = Accum<T>;
  if (dims.batch <= 0 || dims.seq <= 0 || dims.q_heads <= 0) return;
  CheckAttentionDims(dims, sizeof(A));
  PMOL_CUDA_REQUIRE(scratch != nullptr, "attention backward needs scratch");
  PMOL_CUDA_REQUIRE(dims.kv_heads <= 65535, "attention: too many kv heads for one grid");
  const int head_dim = static_cast<int>(dims.head_dim);
  const A scale = static_cast<A>(dims.scale);
  A* delta = static_cast<A*>(scratch);

  const int64_t rows = dims.batch * dims.seq * dims.q_heads;
  constexpr int kDeltaThreads = 256;
  constexpr int64_t kRowsPerBlock = kDeltaThreads / kWarp;
  const int64_t delta_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  PMOL_CUDA_REQUIRE(delta_blocks <= 0x7fffffff, "attention: too many rows");
  AttentionDeltaKernel<T><<<static_cast<unsigned>(delta_blocks), kDeltaThreads, 0, stream>>>(
      out, dout, dims.batch, dims.seq, dims.q_heads, head_dim, delta);
  PMOL_CUDA_CHECK_LAUNCH("AttentionDeltaKernel");
  if constexpr (std::is_same_v<T, Bf16>) {
    if (TensorCoreAttentionApplies(dims, {q, k, v, dout, dq, dk, dv})) {
      return LaunchAttentionBackwardMma(dims, q, k, v, lse, delta, dout, dq, dk, dv, stream);
    }
  }

  const int64_t tiles = (dims.seq + kTile - 1) / kTile;
  PMOL_CUDA_REQUIRE(tiles <= 0x7fffffff, "attention: sequence too long");
  DispatchHeadDim<A>(dims.head_dim, [&]<int kMaxD>() {
    const size_t dkdv_shared = DkDvSharedBytes<A>(head_dim);
    auto dkdv = AttentionDkDvKernel<T, kMaxD>;
    cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(dkdv_shared));
    dim3 dkdv_grid(static_cast<unsigned>(tiles), static_cast<unsigned>(dims.kv_heads),
                   static_cast<unsigned>(dims.batch));
    dkdv<<<dkdv_grid, kAttnThreads, dkdv_shared, stream>>>(q, k, v, dims.key_holes, lse, delta,
                                                           dout, dk, dv,
                                                           dims.seq, dims.q_heads,
                                                           dims.kv_heads, head_dim, scale);
    PMOL_CUDA_CHECK_LAUNCH("AttentionDkDvKernel");

    const size_t dq_shared = DqSharedBytes<A>(head_dim);
    auto dq_kernel = AttentionDqKernel<T, kMaxD>;
    cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(dq_shared));
    dim3 dq_grid(static_cast<unsigned>(tiles), static_cast<unsigned>(dims.q_heads),
                 static_cast<unsigned>(dims.batch));
    dq_kernel<<<dq_grid, kAttnThreads, dq_shared, stream>>>(q, k, v, dims.key_holes, lse, delta,
                                                            dout, dq,
                                                            dims.seq, dims.q_heads,
                                                            dims.kv_heads, head_dim, scale);
    PMOL_CUDA_CHECK_LAUNCH("AttentionDqKernel");
  });
}

template void LaunchAttentionBackward<float>(const AttentionDims&, const float*, const float*,
                                             const float*, const float*, const float*,
                                             const float*, float*, float*, float*, void*,
                                             cudaStream_t);
template void LaunchAttentionBackward<double>(const AttentionDims&, const double*,
                                              const double*, const double*, const double*,
                                              const double*, const double*, double*, double*,
                                              double*, void*, cudaStream_t);
template void LaunchAttentionBackward<Bf16>(const AttentionDims&, const Bf16*, const Bf16*,
                                            const Bf16*, const Bf16*, const float*, const Bf16*,
                                            Bf16*, Bf16*, Bf16*, void*, cudaStream_t);

}  // namespace pmol::cuda
