// Causal GQA attention on the CPU; see attention.h for the math. One task per (batch,
// query head). Each task copies its kv head into a transposed [D,T] buffer so the score
// loop s[0..i] += q_d * kT[d, 0..i] runs over contiguous memory and vectorises without
// reassociating sums. The backward writes per-head partial dk/dv and then adds the heads
// of each group in a fixed order, so results do not depend on the thread count.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {
namespace {

struct Strides {
  int64_t q_row, kv_row;  // elements between consecutive tokens
};

// Copies kv head g of batch b, [T,D] strided, into a transposed [D,T] buffer.
template <typename T>
void Transpose(const T* src, int64_t seq, int64_t head_dim, int64_t row_stride, T* dst) {
  for (int64_t t = 0; t < seq; ++t) {
    const T* row = src + t * row_stride;
    for (int64_t d = 0; d < head_dim; ++d) dst[d * seq + t] = row[d];
  }
}

// s[0..n) = scale * q . kT[:, 0..n)
template <typename T>
void Scores(const T* q, const T* kt, int64_t seq, int64_t head_dim, int64_t n, T scale, T* s) {
  std::fill(s, s + n, T(0));
  for (int64_t d = 0; d < head_dim; ++d) {
    const T qd = q[d] * scale;
    const T* row = kt + d * seq;
    for (int64_t j = 0; j < n; ++j) s[j] += qd * row[j];
  }
}

}  // namespace

template <typename T>
void AttentionForward(const AttentionShape& sh, const T* q, const T* k, const T* v, T* out,
                      T* lse) {
  const int64_t B = sh.batch, S = sh.seq, H = sh.q_heads, G = sh.kv_heads, D = sh.head_dim;
  const int64_t group = H / G;
  const Strides st{H * D, G * D};
  const T scale = static_cast<T>(sh.scale);
  ParallelFor(B * H, S * S * D, [&](int64_t begin, int64_t end) {
    std::vector<T> kt(D * S), s(S);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / H, h = task % H, g = h / group;
      const T* kb = k + b * S * st.kv_row + g * D;
      const T* vb = v + b * S * st.kv_row + g * D;
      Transpose(kb, S, D, st.kv_row, kt.data());
      for (int64_t i = 0; i < S; ++i) {
        const int64_t n = i + 1;
        const T* qi = q + (b * S + i) * st.q_row + h * D;
        Scores(qi, kt.data(), S, D, n, scale, s.data());
        T m = *std::max_element(s.begin(), s.begin() + n);
        T l = 0;
        for (int64_t j = 0; j < n; ++j) {
          s[j] = std::exp(s[j] - m);
          l += s[j];
        }
        T* oi = out + (b * S + i) * st.q_row + h * D;
        std::fill(oi, oi + D, T(0));
        for (int64_t j = 0; j < n; ++j) {
          const T p = s[j];
          const T* vj = vb + j * st.kv_row;
          for (int64_t d = 0; d < D; ++d) oi[d] += p * vj[d];
        }
        const T inv = T(1) / l;
        for (int64_t d = 0; d < D; ++d) oi[d] *= inv;
        lse[(b * H + h) * S + i] = m + std::log(l);
      }
    }
  });
}

template <typename T>
void AttentionBackward(const AttentionShape& sh, const T* q, const T* k, const T* v,
                       const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv) {
  const int64_t B = sh.batch, S = sh.seq, H = sh.q_heads, G = sh.kv_heads, D = sh.head_dim;
  const int64_t group = H / G;
  const Strides st{H * D, G * D};
  const T scale = static_cast<T>(sh.scale);
  // Per-(batch, query head) partial gradients of k and v: [B, H, S, D].
  std::vector<T> dk_part(B * H * S * D), dv_part(B * H * S * D);
  ParallelFor(B * H, 2 * S * S * D, [&](int64_t begin, int64_t end) {
    std::vector<T> kt(D * S), vt(D * S), s(S), dp(S);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / H, h = task % H, g = h / group;
      const T* kb = k + b * S * st.kv_row + g * D;
      const T* vb = v + b * S * st.kv_row + g * D;
      Transpose(kb, S, D, st.kv_row, kt.data());
      Transpose(vb, S, D, st.kv_row, vt.data());
      T* dkh = dk_part.data() + task * S * D;
      T* dvh = dv_part.data() + task * S * D;
      std::fill(dkh, dkh + S * D, T(0));
      std::fill(dvh, dvh + S * D, T(0));
      for (int64_t i = 0; i < S; ++i) {
        const int64_t n = i + 1;
        const int64_t row = (b * S + i) * st.q_row + h * D;
        const T* qi = q + row;
        const T* oi = out + row;
        const T* doi = dout + row;
        const T l = lse[(b * H + h) * S + i];
        Scores(qi, kt.data(), S, D, n, scale, s.data());
        for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - l);  // p_j
        Scores(doi, vt.data(), S, D, n, T(1), dp.data());             // dp_j = do_i . v_j
        T di = 0;
        for (int64_t d = 0; d < D; ++d) di += doi[d] * oi[d];
        T* dqi = dq + row;
        std::fill(dqi, dqi + D, T(0));
        for (int64_t j = 0; j < n; ++j) {
          const T p = s[j];
          const T ds = p * (dp[j] - di) * scale;
          const T* kj = kb + j * st.kv_row;
          T* dkj = dkh + j * D;
          T* dvj = dvh + j * D;
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
            dvj[d] += p * doi[d];
          }
        }
      }
    }
  });
  // dk/dv of kv head g = sum over its query heads, in head order.
  ParallelFor(B * S, 2 * H * D, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / S, t = bt % S;
      for (int64_t g = 0; g < G; ++g) {
        T* dkt = dk + bt * st.kv_row + g * D;
        T* dvt = dv + bt * st.kv_row + g * D;
        std::fill(dkt, dkt + D, T(0));
        std::fill(dvt, dvt + D, T(0));
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const T* pk = dk_part.data() + ((b * H + h) * S + t) * D;
          const T* pv = dv_part.data() + ((b * H + h) * S + t) * D;
          for (int64_t d = 0; d < D; ++d) {
            dkt[d] += pk[d];
            dvt[d] += pv[d];
          }
        }
      }
    }
  });
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
