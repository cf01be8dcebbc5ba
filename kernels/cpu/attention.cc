// Causal GQA attention on the CPU; see attention.h for the math. Work goes through BLAS:
// for each (batch, kv head) the query heads that share the kv head are stacked, and the
// queries are taken in blocks of kBlock positions, so that a block only meets the keys it
// may see (0 .. its last position) and the causal half of the score matrix is never
// computed beyond one block's triangle. With key holes, the part of the hole that every
// row of a block shares is left out of the block's GEMMs too: its keys are read as at
// most two pieces, and the score columns are the pieces side by side. Per block, with
// R = group * block rows and L the keys it reads:
//   S = scale Q K^T [R, L];  P = softmax of the unmasked part;  O = P V
// (the exponentials in f32 with the AVX2 exp of exp_avx2.h)
// and the backward, from the saved lse:
//   dV += P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dO O)) scale;  dQ = dS K;  dK += dS^T Q
// dK and dV of a kv head come out of GEMMs that sum over its query heads, in a fixed
// order, so results do not depend on the thread count. GEMMs use BLAS's threads; the
// row-wise softmax uses the kernels' pool.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/exp_avx2.h"
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

// The key hole of query i of row b, clipped to [0, i) (a query always sees its own key);
// an empty hole is [i+1, i+1).
struct Hole {
  int64_t begin, end;
};
Hole RowHole(const int32_t* holes, int64_t b, int64_t seq, int64_t i) {
  if (holes == nullptr) return {i + 1, i + 1};
  const int64_t at = 2 * (b * seq + i);
  const int64_t begin = std::max<int64_t>(holes[at], 0);
  const int64_t end = std::min<int64_t>(holes[at + 1], i);
  if (begin >= end) return {i + 1, i + 1};
  return {begin, end};
}

// The keys query block [i0, i0 + n) of row b reads: [0, i0 + n) minus the hole all its
// rows share, [skip_begin, skip_begin + skip), as pieces p of keys [key0, key0 + len)
// at score columns [col0, col0 + len); `cols` columns in all.
struct KeyPieces {
  int count = 0;
  int64_t key0[2] = {0, 0}, col0[2] = {0, 0}, len[2] = {0, 0};
  int64_t cols = 0, skip_begin = 0, skip = 0;

  KeyPieces(const int32_t* holes, int64_t b, int64_t seq, int64_t i0, int64_t n) {
    const int64_t keys = i0 + n;
    int64_t sb = 0, se = keys;
    for (int64_t i = i0; i < keys && sb < se; ++i) {
      const Hole h = RowHole(holes, b, seq, i);
      sb = std::max(sb, h.begin);
      se = std::min(se, h.end);
    }
    if (sb < se) {
      skip_begin = sb;
      skip = se - sb;
    }
    Add(0, skip == 0 ? keys : skip_begin);
    if (skip > 0) Add(skip_begin + skip, keys - skip_begin - skip);
  }
  // Column of key j (j outside the skipped keys; j may be one past the last key).
  int64_t Col(int64_t j) const { return j <= skip_begin ? j : j - skip; }

 private:
  void Add(int64_t key, int64_t length) {
    if (length <= 0) return;
    key0[count] = key;
    col0[count] = cols;
    len[count] = length;
    cols += length;
    ++count;
  }
};

// The score columns row position i sees: [0, a) and [c, e); the rest of [0, cols) is
// masked.
struct VisibleColumns {
  int64_t a, c, e;
  VisibleColumns(const KeyPieces& kp, const Hole& h, int64_t i)
      : a(kp.Col(h.begin)), c(kp.Col(h.end)), e(kp.Col(i + 1)) {}
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (int64_t j = 0; j < a; ++j) fn(j);
    for (int64_t j = c; j < e; ++j) fn(j);
  }
  template <typename T>
  void ZeroMasked(T* row, int64_t cols) const {
    std::fill(row + a, row + c, T(0));
    std::fill(row + e, row + cols, T(0));
  }
};

// row[j] = exp(row[j] - shift) over [begin, end); returns their sum. In f32 8 lanes at a
// time with the AVX2 exp (exp_avx2.h; its arguments are <= 0 here up to rounding, the
// shift being the row max or logsumexp) unless `scalar`, which a caller sets for a row
// holding a NaN so that the NaN reaches the output as std::exp passes it on.
template <typename T>
T ExpShifted(T* row, int64_t begin, int64_t end, T shift, bool scalar) {
  T sum = 0;
  int64_t j = begin;
  if constexpr (std::is_same_v<T, float>) {
    if (!scalar) {
      const __m256 sv = _mm256_set1_ps(shift);
      __m256 acc = _mm256_setzero_ps();
      for (; j + 8 <= end; j += 8) {
        const __m256 e = Exp8NonPositive(_mm256_sub_ps(_mm256_loadu_ps(row + j), sv));
        _mm256_storeu_ps(row + j, e);
        acc = _mm256_add_ps(acc, e);
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc);
      for (float x : lanes) sum += x;
    }
  }
  for (; j < end; ++j) {
    row[j] = std::exp(row[j] - shift);
    sum += row[j];
  }
  return sum;
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
        const int64_t n = std::min(kBlock, s.S - i0), rows = s.group * n;
        const KeyPieces kp(sh.key_holes, b, s.S, i0, n);
        const int64_t cols = kp.cols;
        GatherQ(s, q, b, g, i0, n, qc.data());
        for (int p = 0; p < kp.count; ++p)
          Gemm<T>(false, true, rows, kp.len[p], s.D, scale, qc.data(), s.D,
                  kg.data() + kp.key0[p] * s.D, s.D, T(0), scores.data() + kp.col0[p], cols);
        ParallelFor(rows, 3 * cols, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t i = i0 + r % n;
            const VisibleColumns vis(kp, RowHole(sh.key_holes, b, s.S, i), i);
            T* row = scores.data() + r * cols;
            T m = -std::numeric_limits<T>::infinity();
            bool nan = false;
            vis.ForEach([&](int64_t j) {
              m = std::max(m, row[j]);
              nan |= row[j] != row[j];
            });
            const T l = ExpShifted(row, 0, vis.a, m, nan) + ExpShifted(row, vis.c, vis.e, m, nan);
            const T inv = T(1) / l;
            vis.ForEach([&](int64_t j) { row[j] *= inv; });
            vis.ZeroMasked(row, cols);
            lse[(b * s.H + g * s.group + r / n) * s.S + i] = m + std::log(l);
          }
        });
        for (int p = 0; p < kp.count; ++p)
          Gemm<T>(false, false, rows, s.D, kp.len[p], T(1), scores.data() + kp.col0[p], cols,
                  vg.data() + kp.key0[p] * s.D, s.D, p == 0 ? T(0) : T(1), oc.data(), s.D);
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
        const int64_t n = std::min(kBlock, s.S - i0), rows = s.group * n;
        const KeyPieces kp(sh.key_holes, b, s.S, i0, n);
        const int64_t cols = kp.cols;
        GatherQ(s, q, b, g, i0, n, qc.data());
        GatherQ(s, out, b, g, i0, n, oc.data());
        GatherQ(s, dout, b, g, i0, n, doc.data());
        for (int x = 0; x < kp.count; ++x) {
          const T* kx = kg.data() + kp.key0[x] * s.D;
          Gemm<T>(false, true, rows, kp.len[x], s.D, scale, qc.data(), s.D, kx, s.D, T(0),
                  p.data() + kp.col0[x], cols);
          Gemm<T>(false, true, rows, kp.len[x], s.D, T(1), doc.data(), s.D,
                  vg.data() + kp.key0[x] * s.D, s.D, T(0), dp.data() + kp.col0[x], cols);
        }
        // P from the saved lse; dS = P (dP - rowsum(dO O)) scale, written over dP.
        ParallelFor(rows, 4 * cols, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t i = i0 + r % n;
            const VisibleColumns vis(kp, RowHole(sh.key_holes, b, s.S, i), i);
            const T l = lse[(b * s.H + g * s.group + r / n) * s.S + i];
            T di = 0;
            for (int64_t d = 0; d < s.D; ++d) di += doc[r * s.D + d] * oc[r * s.D + d];
            T* prow = p.data() + r * cols;
            T* dsrow = dp.data() + r * cols;
            const bool scalar = !std::isfinite(l);
            ExpShifted(prow, 0, vis.a, l, scalar);
            ExpShifted(prow, vis.c, vis.e, l, scalar);
            vis.ForEach([&](int64_t j) { dsrow[j] = prow[j] * (dsrow[j] - di) * scale; });
            vis.ZeroMasked(prow, cols);
            vis.ZeroMasked(dsrow, cols);
          }
        });
        for (int x = 0; x < kp.count; ++x) {
          const int64_t key0 = kp.key0[x], col0 = kp.col0[x], len = kp.len[x];
          Gemm<T>(true, false, len, s.D, rows, T(1), p.data() + col0, cols, doc.data(), s.D,
                  T(1), dvg.data() + key0 * s.D, s.D);
          Gemm<T>(false, false, rows, s.D, len, T(1), dp.data() + col0, cols,
                  kg.data() + key0 * s.D, s.D, x == 0 ? T(0) : T(1), dqc.data(), s.D);
          Gemm<T>(true, false, len, s.D, rows, T(1), dp.data() + col0, cols, qc.data(), s.D,
                  T(1), dkg.data() + key0 * s.D, s.D);
        }
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
