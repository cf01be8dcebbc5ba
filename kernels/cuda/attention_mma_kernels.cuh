// Causal grouped-query attention in bf16 on tensor cores, FlashAttention-2 style: the
// kernels and their shared-memory sizes (attention_mma.cu launches them; they are in a
// header so that tests/cuda/attention_mma_emulated_test.cc runs this very code on the CPU
// under a SIMT emulation). The math is that of attention_forward.cu and
// attention_backward.cu, whose scalar kernels run the cases these do not take.
//
// Forward:
//   S = scale * Q K^T (masked: key j visible to query i iff j <= i and j is outside i's
//   key hole), P = softmax_row(S), out = P V, lse[b, h, i] = logsumexp_j S[i, j].
// One block of 4 warps per (64-query tile, query head, batch), longest tiles first; warp
// w owns queries [16w, 16w + 16) of the tile. The block walks the key tiles of 64 up to
// the diagonal (skipping those every query's hole covers), and per tile:
//   S (16 x 64 per warp, f32)  = Q K^T on tensor cores (bf16 operands from shared memory),
//   the online softmax in registers, in base 2: s2 = S * log2(e), running row max m and
//   sum l, the accumulated output rescaled by exp2(m_old - m_new),
//   O (16 x D per warp, f32)  += P V with P rounded to bf16 in registers (the C tiles of
//   S are the A fragments of this product) and V read from a transposed shared tile.
// At the end out = O / l (rounded to bf16 once) and lse = (m + log2 l) * ln 2.
// Precision against the scalar kernel: the products are the same bf16 values multiplied
// exactly and summed in f32 (in another order); P is rounded to bf16 before P V (2^-9
// relative per term), while l sums the unrounded probabilities.
//
// Backward. With
// P = exp(scale * Q K^T - lse) on visible pairs and Delta_i = dot(dO_i, O_i) (computed by
// attention_backward.cu's delta kernel before these run):
//   dP = dO V^T,  dS = P * (dP - Delta)
//   dV = sum over the group's query heads of P^T dO
//   dK = scale * sum over the group's query heads of dS^T Q
//   dQ = scale * dS K
// Two kernels of 4 warps, each warp owning 16 rows of its block's 64:
//   dK/dV: one block per (64-key tile, kv head, batch); it walks the group's query heads
//     and the query tiles from its own diagonal on (skipping those whose holes all cover
//     its keys). Per tile each warp computes S^T = K Q^T and dP^T = V dO^T (16 keys x 64
//     queries, f32), forms P^T and dS^T in registers, and adds P^T dO and dS^T Q on
//     tensor cores with P^T and dS^T rounded to bf16 (Q and dO also kept transposed in
//     shared memory for these).
//   dQ: one block per (64-query tile, query head, batch) over the key tiles up to its
//     diagonal: S = Q K^T, dP = dO V^T, dQ += dS K (K also kept transposed).
// S and dP are recomputed in the second kernel instead of summing dQ with atomics, so
// every output element is summed in a fixed order: deterministic. Scores are in base 2
// (s2 = S log2 e, lse2 = lse log2 e, P = exp2(s2 - lse2)). Accumulators are f32; dq, dk,
// dv are rounded to bf16 once.
#ifndef PMOL_KERNELS_CUDA_ATTENTION_MMA_KERNELS_CUH_
#define PMOL_KERNELS_CUDA_ATTENTION_MMA_KERNELS_CUH_

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/attention_mma.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/dtype.h"

namespace pmol::cuda {

// The two query rows a lane holds in C tiles (rows g and g + 8 of its warp's 16 in the
// block's tile of 64 starting at q0), with their key holes.
struct LaneQueryRows {
  int64_t pos[2];
  KeyHole hole[2];
  __device__ __forceinline__ LaneQueryRows(const int32_t* holes, int64_t b, int64_t seq,
                                           int64_t q0, int warp, int g) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      pos[r] = q0 + 16 * warp + g + 8 * r;
      hole[r] = LoadKeyHole(holes, b, seq, pos[r]);
    }
  }
  // Whether both rows' holes cover keys [k0, k0 + 64) (the block skips the tile when all
  // its lanes agree: __syncthreads_and).
  __device__ __forceinline__ bool HideKeyTile(int64_t k0, int64_t seq) const {
    return HidesTile(hole[0], k0, pos[0], seq, kMmaTile) &&
           HidesTile(hole[1], k0, pos[1], seq, kMmaTile);
  }
};

template <int kD>
constexpr size_t ForwardMmaSharedBytes() {
  // Q and K tiles [64][kD + 8], V transposed [kD][64 + 8], all bf16.
  return (2 * kMmaTile * kMmaTileLd<kD> + kD * kMmaTileLdT) * sizeof(uint16_t);
}

template <int kD>
__global__ void __launch_bounds__(kMmaThreads)
    AttentionForwardMmaKernel(const Bf16* q, const Bf16* k, const Bf16* v,
                              const int32_t* holes, Bf16* out, float* lse, int64_t seq,
                              int64_t q_heads, int64_t kv_heads, float scale_log2) {
  constexpr int kLd = kMmaTileLd<kD>;
  constexpr int kScoreTiles = kMmaTile / 8;  // C tiles of a warp's 16 x 64 scores
  PMOL_DYNAMIC_SHARED(shared_raw);
  uint16_t* s_q = reinterpret_cast<uint16_t*>(shared_raw);
  uint16_t* s_k = s_q + kMmaTile * kLd;
  uint16_t* s_vt = s_k + kMmaTile * kLd;

  const int64_t q_tile = gridDim.x - 1 - blockIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t hk = h / (q_heads / kv_heads);
  const int warp = threadIdx.x / kWarp;
  const MmaLane lane = ThisMmaLane();
  const int64_t q0 = q_tile * kMmaTile;
  const LaneQueryRows rows(holes, b, seq, q0, warp, lane.g);
  const int64_t* q_pos = rows.pos;
  const KeyHole* hole = rows.hole;

  LoadMmaTile<kD>(q, b, q0, seq, q_heads, h, s_q, nullptr);

  float o[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};  // this lane's part of the row sums (its 16 of 64 columns)

  for (int64_t k_tile = 0; k_tile <= q_tile; ++k_tile) {
    const int64_t k0 = k_tile * kMmaTile;
    if (holes != nullptr && __syncthreads_and(rows.HideKeyTile(k0, seq))) continue;
    __syncthreads();  // the previous K and V tiles are no longer read
    LoadMmaTile<kD>(k, b, k0, seq, kv_heads, hk, s_k, nullptr);
    LoadMmaTile<kD>(v, b, k0, seq, kv_heads, hk, nullptr, s_vt);
    __syncthreads();

    float s[kScoreTiles][4];
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    MmaRowsTimesRowsT<kD, kMmaTile>(s_q, kLd, 16 * warp, s_k, kLd, s);

    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t k_pos = k0 + 8 * j + 2 * lane.t + e % 2;
        const bool visible =
            k_pos <= q_pos[r] && k_pos < seq && !hole[r].Hides(k_pos, q_pos[r]);
        s[j][e] = visible ? s[j][e] * scale_log2 : -INFINITY;
        tile_max[r] = fmaxf(tile_max[r], s[j][e]);
      }
    }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], GroupMax(tile_max[r]));
      // A row with no visible key yet (only padding rows) keeps m = -inf and adds nothing.
      correction[r] = m_new == -INFINITY ? 1.0f : exp2f(m[r] - m_new);
      m[r] = m_new;
      l[r] *= correction[r];
    }
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const float p = m[r] == -INFINITY ? 0.0f : exp2f(s[j][e] - m[r]);
        s[j][e] = p;
        l[r] += p;
      }
    }
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[n][e] *= correction[e / 2];
    }
    MmaRegsTimesRowsT<kMmaTile, kD>(s, s_vt, kMmaTileLdT, o);
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float row_sum = GroupSum(l[r]);
    if (q_pos[r] >= seq) continue;
    const float inv_l = 1.0f / row_sum;
    Bf16* out_row = out + ((b * seq + q_pos[r]) * q_heads + h) * kD;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      *reinterpret_cast<uint32_t*>(out_row + 8 * n + 2 * lane.t) =
          PackBf16(o[n][2 * r] * inv_l, o[n][2 * r + 1] * inv_l);
    }
    if (lane.t == 0) lse[(b * q_heads + h) * seq + q_pos[r]] = (m[r] + log2f(row_sum)) * kLn2;
  }
}

template <int kD>
constexpr size_t DkDvMmaSharedBytes() {
  // K, V, Q, dO tiles [64][kD + 8] and Q, dO transposed [kD][64 + 8] (bf16); lse2 and
  // Delta of the query tile (f32) and its key holes (i32 pairs).
  return (4 * kMmaTile * kMmaTileLd<kD> + 2 * kD * kMmaTileLdT) * sizeof(uint16_t) +
         2 * kMmaTile * sizeof(float) + 2 * kMmaTile * sizeof(int32_t);
}

template <int kD>
constexpr size_t DqMmaSharedBytes() {
  // Q, dO, K, V tiles [64][kD + 8] and K transposed [kD][64 + 8] (bf16).
  return (4 * kMmaTile * kMmaTileLd<kD> + kD * kMmaTileLdT) * sizeof(uint16_t);
}

template <int kD>
__global__ void __launch_bounds__(kMmaThreads)
    AttentionDkDvMmaKernel(const Bf16* q, const Bf16* k, const Bf16* v, const int32_t* holes,
                           const float* lse, const float* delta, const Bf16* dout, Bf16* dk,
                           Bf16* dv, int64_t seq, int64_t q_heads, int64_t kv_heads,
                           float scale, float scale_log2) {
  constexpr int kLd = kMmaTileLd<kD>;
  constexpr int kScoreTiles = kMmaTile / 8;
  PMOL_DYNAMIC_SHARED(shared_raw);
  uint16_t* s_k = reinterpret_cast<uint16_t*>(shared_raw);
  uint16_t* s_v = s_k + kMmaTile * kLd;
  uint16_t* s_q = s_v + kMmaTile * kLd;
  uint16_t* s_do = s_q + kMmaTile * kLd;
  uint16_t* s_qt = s_do + kMmaTile * kLd;
  uint16_t* s_dot = s_qt + kD * kMmaTileLdT;
  float* s_lse2 = reinterpret_cast<float*>(s_dot + kD * kMmaTileLdT);
  float* s_delta = s_lse2 + kMmaTile;
  int32_t* s_hole = reinterpret_cast<int32_t*>(s_delta + kMmaTile);  // [query][begin, end]

  const int64_t k_tile = blockIdx.x;
  const int64_t hk = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t group = q_heads / kv_heads;
  const int64_t q_tiles = (seq + kMmaTile - 1) / kMmaTile;
  const int warp = threadIdx.x / kWarp;
  const MmaLane lane = ThisMmaLane();
  const int64_t k0 = k_tile * kMmaTile;
  const int64_t k_pos[2] = {k0 + 16 * warp + lane.g, k0 + 16 * warp + lane.g + 8};

  LoadMmaTile<kD>(k, b, k0, seq, kv_heads, hk, s_k, nullptr);
  LoadMmaTile<kD>(v, b, k0, seq, kv_heads, hk, s_v, nullptr);

  float acc_dk[kD / 8][4];
  float acc_dv[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dk[n][e] = acc_dv[n][e] = 0.0f;
  }

  for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
    for (int64_t q_tile = k_tile; q_tile < q_tiles; ++q_tile) {
      const int64_t q0 = q_tile * kMmaTile;
      __syncthreads();  // the previous query tile is no longer read
      LoadMmaTile<kD>(q, b, q0, seq, q_heads, h, s_q, s_qt);
      LoadMmaTile<kD>(dout, b, q0, seq, q_heads, h, s_do, s_dot);
      if (threadIdx.x < kMmaTile) {
        const int64_t t = q0 + threadIdx.x;
        s_lse2[threadIdx.x] = t < seq ? lse[(b * q_heads + h) * seq + t] * kLog2e : 0.0f;
        s_delta[threadIdx.x] = t < seq ? delta[(b * q_heads + h) * seq + t] : 0.0f;
        const KeyHole hole = LoadKeyHole(holes, b, seq, t);
        s_hole[2 * threadIdx.x] = static_cast<int32_t>(hole.begin);
        s_hole[2 * threadIdx.x + 1] = static_cast<int32_t>(hole.end);
      }
      __syncthreads();
      if (holes != nullptr) {  // skip a query tile whose holes all cover this key tile
        bool hidden = true;
        if (threadIdx.x < kMmaTile) {
          const KeyHole hole{s_hole[2 * threadIdx.x], s_hole[2 * threadIdx.x + 1]};
          hidden = HidesTile(hole, k0, q0 + threadIdx.x, seq, kMmaTile);
        }
        if (__syncthreads_and(hidden)) continue;
      }

      float p[kScoreTiles][4];   // S^T, then P^T: rows = this warp's keys, cols = queries
      float ds[kScoreTiles][4];  // dP^T, then dS^T
#pragma unroll
      for (int j = 0; j < kScoreTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) p[j][e] = ds[j][e] = 0.0f;
      }
      MmaRowsTimesRowsT<kD, kMmaTile>(s_k, kLd, 16 * warp, s_q, kLd, p);
      MmaRowsTimesRowsT<kD, kMmaTile>(s_v, kLd, 16 * warp, s_do, kLd, ds);
#pragma unroll
      for (int j = 0; j < kScoreTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 8 * j + 2 * lane.t + e % 2;  // query of the tile
          const int64_t q_pos = q0 + c;
          const int64_t kp = k_pos[e / 2];
          const KeyHole hole{s_hole[2 * c], s_hole[2 * c + 1]};
          const bool visible =
              kp <= q_pos && q_pos < seq && kp < seq && !hole.Hides(kp, q_pos);
          const float pv = visible ? exp2f(p[j][e] * scale_log2 - s_lse2[c]) : 0.0f;
          p[j][e] = pv;
          ds[j][e] = pv * (ds[j][e] - s_delta[c]);
        }
      }
      MmaRegsTimesRowsT<kMmaTile, kD>(p, s_dot, kMmaTileLdT, acc_dv);
      MmaRegsTimesRowsT<kMmaTile, kD>(ds, s_qt, kMmaTileLdT, acc_dk);
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (k_pos[r] >= seq) continue;
    const int64_t offset = ((b * seq + k_pos[r]) * kv_heads + hk) * kD + 2 * lane.t;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      *reinterpret_cast<uint32_t*>(dk + offset + 8 * n) =
          PackBf16(scale * acc_dk[n][2 * r], scale * acc_dk[n][2 * r + 1]);
      *reinterpret_cast<uint32_t*>(dv + offset + 8 * n) =
          PackBf16(acc_dv[n][2 * r], acc_dv[n][2 * r + 1]);
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kMmaThreads)
    AttentionDqMmaKernel(const Bf16* q, const Bf16* k, const Bf16* v, const int32_t* holes,
                         const float* lse, const float* delta, const Bf16* dout, Bf16* dq,
                         int64_t seq, int64_t q_heads, int64_t kv_heads, float scale,
                         float scale_log2) {
  constexpr int kLd = kMmaTileLd<kD>;
  constexpr int kScoreTiles = kMmaTile / 8;
  PMOL_DYNAMIC_SHARED(shared_raw);
  uint16_t* s_q = reinterpret_cast<uint16_t*>(shared_raw);
  uint16_t* s_do = s_q + kMmaTile * kLd;
  uint16_t* s_k = s_do + kMmaTile * kLd;
  uint16_t* s_v = s_k + kMmaTile * kLd;
  uint16_t* s_kt = s_v + kMmaTile * kLd;

  const int64_t q_tile = gridDim.x - 1 - blockIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t hk = h / (q_heads / kv_heads);
  const int warp = threadIdx.x / kWarp;
  const MmaLane lane = ThisMmaLane();
  const int64_t q0 = q_tile * kMmaTile;
  const LaneQueryRows rows(holes, b, seq, q0, warp, lane.g);
  const int64_t* q_pos = rows.pos;
  const KeyHole* hole = rows.hole;
  float row_lse2[2];
  float row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool inside = q_pos[r] < seq;
    row_lse2[r] = inside ? lse[(b * q_heads + h) * seq + q_pos[r]] * kLog2e : 0.0f;
    row_delta[r] = inside ? delta[(b * q_heads + h) * seq + q_pos[r]] : 0.0f;
  }

  LoadMmaTile<kD>(q, b, q0, seq, q_heads, h, s_q, nullptr);
  LoadMmaTile<kD>(dout, b, q0, seq, q_heads, h, s_do, nullptr);

  float acc[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

  for (int64_t k_tile = 0; k_tile <= q_tile; ++k_tile) {
    const int64_t k0 = k_tile * kMmaTile;
    if (holes != nullptr && __syncthreads_and(rows.HideKeyTile(k0, seq))) continue;
    __syncthreads();  // the previous K and V tiles are no longer read
    LoadMmaTile<kD>(k, b, k0, seq, kv_heads, hk, s_k, s_kt);
    LoadMmaTile<kD>(v, b, k0, seq, kv_heads, hk, s_v, nullptr);
    __syncthreads();

    float s[kScoreTiles][4];   // S
    float ds[kScoreTiles][4];  // dP, then dS
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = ds[j][e] = 0.0f;
    }
    MmaRowsTimesRowsT<kD, kMmaTile>(s_q, kLd, 16 * warp, s_k, kLd, s);
    MmaRowsTimesRowsT<kD, kMmaTile>(s_do, kLd, 16 * warp, s_v, kLd, ds);
#pragma unroll
    for (int j = 0; j < kScoreTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const int64_t k_pos = k0 + 8 * j + 2 * lane.t + e % 2;
        const bool visible = k_pos <= q_pos[r] && q_pos[r] < seq && k_pos < seq &&
                             !hole[r].Hides(k_pos, q_pos[r]);
        const float pv = visible ? exp2f(s[j][e] * scale_log2 - row_lse2[r]) : 0.0f;
        ds[j][e] = pv * (ds[j][e] - row_delta[r]);
      }
    }
    MmaRegsTimesRowsT<kMmaTile, kD>(ds, s_kt, kMmaTileLdT, acc);
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (q_pos[r] >= seq) continue;
    Bf16* dq_row = dq + ((b * seq + q_pos[r]) * q_heads + h) * kD + 2 * lane.t;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      *reinterpret_cast<uint32_t*>(dq_row + 8 * n) =
          PackBf16(scale * acc[n][2 * r], scale * acc[n][2 * r + 1]);
    }
  }
}

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_ATTENTION_MMA_KERNELS_CUH_
