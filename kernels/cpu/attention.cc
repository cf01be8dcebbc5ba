// Causal GQA attention on the CPU; see attention.h for the math. Work goes through BLAS:
// for each (batch, kv head) the query heads that share the kv head are stacked, and the
// queries are taken in blocks of kBlock positions, so that a block only meets the keys it
// may see (0 .. its last position) and the causal half of the score matrix is never
// computed beyond one block's triangle. Per block, with R = group * block rows:
//   S = scale Q K^T [R, L];  P = softmax of the unmasked part;  O = P V
// and the backward, from the saved lse:
//   dV += P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dO O)) scale;  dQ = dS K;  dK += dS^T Q
// dK and dV of a kv head come out of GEMMs that sum over its query heads, in a fixed
// order, so results do not depend on the thread count. GEMMs use BLAS's threads; the
// row-wise softmax uses the kernels' pool.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace pmol::cpu {
namespace {

constexpr int64_t kBlock = 128;

struct Geometry {
  int64_t B, S, H, G, D, group, q_row, kv_row;
  explicit Geometry(const AttentionShape& sh)
      : B(sh.batch), S(sh.seq), H(sh.q_heads), G(sh.kv_heads), D(sh.head_dim),
        group(sh.q_heads / sh.kv_heads), q_row(sh.q_heads * sh.head_dim),
        kv_row(sh.kv_heads * sh.head_dim) {}
};

// Copies kv head g of batch b, [S, D] strided, into contiguous rows.
template <typename T>
void GatherKv(const Geometry& s, const T* src, int64_t b, int64_t g, T* dst) {
  for (int64_t t = 0; t < s.S; ++t)
    std::copy_n(src + (b * s.S + t) * s.kv_row + g * s.D, s.D, dst + t * s.D);
}

template <typename T>
void ScatterKv(const Geometry& s, const T* src, int64_t b, int64_t g, T* dst) {
  for (int64_t t = 0; t < s.S; ++t)
    std::copy_n(src + t * s.D, s.D, dst + (b * s.S + t) * s.kv_row + g * s.D);
}

// Rows of the stacked block: row r is query head g*group + r / n at position i0 + r % n.
template <typename T>
void GatherQ(const Geometry& s, const T* src, int64_t b, int64_t g, int64_t i0, int64_t n, T* dst) {
  for (int64_t hh = 0; hh < s.group; ++hh)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(src + (b * s.S + i0 + i) * s.q_row + (g * s.group + hh) * s.D, s.D,
                  dst + (hh * n + i) * s.D);
}

template <typename T>
void ScatterQ(const Geometry& s, const T* src, int64_t b, int64_t g, int64_t i0, int64_t n, T* dst) {
  for (int64_t hh = 0; hh < s.group; ++hh)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(src + (hh * n + i) * s.D, s.D,
                  dst + (b * s.S + i0 + i) * s.q_row + (g * s.group + hh) * s.D);
}

}  // namespace

template <typename T>
void AttentionForward(const AttentionShape& sh, const T* q, const T* k, const T* v, T* out,
                      T* lse) {
  const Geometry s(sh);
  const T scale = static_cast<T>(sh.scale);
  std::vector<T> kg(s.S * s.D), vg(s.S * s.D), qc(s.group * kBlock * s.D),
      oc(s.group * kBlock * s.D), scores(s.group * kBlock * s.S);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t g = 0; g < s.G; ++g) {
      GatherKv(s, k, b, g, kg.data());
      GatherKv(s, v, b, g, vg.data());
      for (int64_t i0 = 0; i0 < s.S; i0 += kBlock) {
        const int64_t n = std::min(kBlock, s.S - i0), rows = s.group * n, keys = i0 + n;
        GatherQ(s, q, b, g, i0, n, qc.data());
        Gemm<T>(false, true, rows, keys, s.D, scale, qc.data(), s.D, kg.data(), s.D, T(0),
                scores.data(), keys);
        ParallelFor(rows, 3 * keys, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t i = i0 + r % n, visible = i + 1;
            T* row = scores.data() + r * keys;
            const T m = *std::max_element(row, row + visible);
            T l = 0;
            for (int64_t j = 0; j < visible; ++j) {
              row[j] = std::exp(row[j] - m);
              l += row[j];
            }
            const T inv = T(1) / l;
            for (int64_t j = 0; j < visible; ++j) row[j] *= inv;
            std::fill(row + visible, row + keys, T(0));
            lse[(b * s.H + g * s.group + r / n) * s.S + i] = m + std::log(l);
          }
        });
        Gemm<T>(false, false, rows, s.D, keys, T(1), scores.data(), keys, vg.data(), s.D, T(0),
                oc.data(), s.D);
        ScatterQ(s, oc.data(), b, g, i0, n, out);
      }
    }
  }
}

template <typename T>
void AttentionBackward(const AttentionShape& sh, const T* q, const T* k, const T* v,
                       const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  const Geometry s(sh);
  const T scale = static_cast<T>(sh.scale);
  const int64_t block_elems = s.group * kBlock * s.D;
  std::vector<T> kg(s.S * s.D), vg(s.S * s.D), dkg(s.S * s.D), dvg(s.S * s.D);
  std::vector<T> qc(block_elems), oc(block_elems), doc(block_elems), dqc(block_elems);
  std::vector<T> p(s.group * kBlock * s.S), dp(s.group * kBlock * s.S), delta(s.group * kBlock);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t g = 0; g < s.G; ++g) {
      GatherKv(s, k, b, g, kg.data());
      GatherKv(s, v, b, g, vg.data());
      std::fill(dkg.begin(), dkg.end(), T(0));
      std::fill(dvg.begin(), dvg.end(), T(0));
      for (int64_t i0 = 0; i0 < s.S; i0 += kBlock) {
        const int64_t n = std::min(kBlock, s.S - i0), rows = s.group * n, keys = i0 + n;
        GatherQ(s, q, b, g, i0, n, qc.data());
        GatherQ(s, out, b, g, i0, n, oc.data());
        GatherQ(s, dout, b, g, i0, n, doc.data());
        Gemm<T>(false, true, rows, keys, s.D, scale, qc.data(), s.D, kg.data(), s.D, T(0),
                p.data(), keys);
        Gemm<T>(false, true, rows, keys, s.D, T(1), doc.data(), s.D, vg.data(), s.D, T(0),
                dp.data(), keys);
        // P from the saved lse; dS = P (dP - rowsum(dO O)) scale, written over dP.
        ParallelFor(rows, 4 * keys, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t i = i0 + r % n, visible = i + 1;
            const T l = lse[(b * s.H + g * s.group + r / n) * s.S + i];
            T di = 0;
            for (int64_t d = 0; d < s.D; ++d) di += doc[r * s.D + d] * oc[r * s.D + d];
            T* prow = p.data() + r * keys;
            T* dsrow = dp.data() + r * keys;
            for (int64_t j = 0; j < visible; ++j) {
              prow[j] = std::exp(prow[j] - l);
              dsrow[j] = prow[j] * (dsrow[j] - di) * scale;
            }
            std::fill(prow + visible, prow + keys, T(0));
            std::fill(dsrow + visible, dsrow + keys, T(0));
          }
        });
        Gemm<T>(true, false, keys, s.D, rows, T(1), p.data(), keys, doc.data(), s.D, T(1),
                dvg.data(), s.D);
        Gemm<T>(false, false, rows, s.D, keys, T(1), dp.data(), keys, kg.data(), s.D, T(0),
                dqc.data(), s.D);
        Gemm<T>(true, false, keys, s.D, rows, T(1), dp.data(), keys, qc.data(), s.D, T(1),
                dkg.data(), s.D);
        ScatterQ(s, dqc.data(), b, g, i0, n, dq);
      }
      ScatterKv(s, dkg.data(), b, g, dk);
      ScatterKv(s, dvg.data(), b, g, dv);
    }
  }
}

template void AttentionForward<float>(const AttentionShape&, const float*, const float*,
                                      const float*, float*, float*);
template void AttentionForward<double>(const AttentionShape&, const double*, const double*,
                                       const double*, double*, double*);
template void AttentionBackward<float>(const AttentionShape&, const float*, const float*,
                                       const float*, const float*, const float*, const float*,
                                       float*, float*, float*);
template void AttentionBackward<double>(const AttentionShape&, const double*, const double*,
                                        const double*, const double*, const double*,
                                        const double*, double*, double*, double*);

}  // namespace pmol::cpu
