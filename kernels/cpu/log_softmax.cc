// Target log-probabilities on the CPU; see log_softmax.h. The row sum of exponentials is
// accumulated in double so long vocabularies do not lose the small terms. f32 rows whose
// logits are all finite take an AVX2 path (exp_avx2.h: < 2 ulp per term, 8 terms at a
// time, summed in double); rows with NaN or infinities, f64 rows and the tails of rows
// take the scalar path, so NaN still propagates into the loss.
#include "kernels/cpu/log_softmax.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/exp_avx2.h"
#include "kernels/cpu/parallel.h"

namespace pmol::cpu {
namespace {

// max of a row, or NaN / +inf when the row holds either (then the scalar path runs).
float RowMax(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY), bad = _mm256_setzero_ps();
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 xv = _mm256_loadu_ps(x + v);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(xv, xv, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, xv);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float out = lanes[0];
  for (int k = 1; k < 8; ++k) out = std::max(out, lanes[k]);
  for (; v < n; ++v) {
    if (std::isnan(x[v])) return NAN;
    out = std::max(out, x[v]);
  }
  return _mm256_movemask_ps(bad) != 0 ? NAN : out;
}

// sum_v exp(x_v - m) in double, for finite x and m.
double SumExp(const float* x, int64_t n, float m) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    const __m256 e = Exp8NonPositive(_mm256_sub_ps(_mm256_loadu_ps(x + v), mv));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(lo, hi));
  double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; v < n; ++v) sum += std::exp(static_cast<double>(x[v] - m));
  return sum;
}

// dx_v = -g exp(x_v - l) for finite x and l.
void NegScaledExp(const float* x, int64_t n, float l, float g, float* dx) {
  const __m256 lv = _mm256_set1_ps(l), ng = _mm256_set1_ps(-g);
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    _mm256_storeu_ps(dx + v, _mm256_mul_ps(ng, Exp8NonPositive(_mm256_sub_ps(_mm256_loadu_ps(x + v), lv))));
  }
  for (; v < n; ++v) dx[v] = -g * std::exp(x[v] - l);
}

}  // namespace

template <typename T>
void LogSoftmaxGather(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                      T* logp, T* lse) {
  ParallelFor(rows, 4 * vocab, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* x = logits + r * vocab;
      double sum = 0.0;
      T m;
      if constexpr (std::is_same_v<T, float>) {
        m = RowMax(x, vocab);
        if (std::isfinite(m)) {
          sum = SumExp(x, vocab, m);
        } else {
          m = *std::max_element(x, x + vocab);
          for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(x[v] - m));
        }
      } else {
        m = *std::max_element(x, x + vocab);
        for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(x[v] - m));
      }
      const T l = m + static_cast<T>(std::log(sum));
      lse[r] = l;
      logp[r] = targets[r] < 0 ? T(0) : x[targets[r]] - l;
    }
  });
}

template <typename T>
void LogSoftmaxGatherBackward(const T* logits, const int32_t* targets, const T* lse,
                              const T* dlogp, int64_t rows, int64_t vocab, T* dlogits) {
  ParallelFor(rows, 3 * vocab, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* dx = dlogits + r * vocab;
      if (targets[r] < 0) {
        std::fill(dx, dx + vocab, T(0));
        continue;
      }
      const T* x = logits + r * vocab;
      const T g = dlogp[r], l = lse[r];
      if constexpr (std::is_same_v<T, float>) {
        if (std::isfinite(l) && std::isfinite(g)) {
          NegScaledExp(x, vocab, l, g, dx);  // x_v <= lse for finite rows: arguments <= 0
          dx[targets[r]] += g;
          continue;
        }
      }
      for (int64_t v = 0; v < vocab; ++v) dx[v] = -g * std::exp(x[v] - l);
      dx[targets[r]] += g;
    }
  });
}

template void LogSoftmaxGather<float>(const float*, const int32_t*, int64_t, int64_t, float*,
                                      float*);
template void LogSoftmaxGather<double>(const double*, const int32_t*, int64_t, int64_t, double*,
                                       double*);
template void LogSoftmaxGatherBackward<float>(const float*, const int32_t*, const float*,
                                              const float*, int64_t, int64_t, float*);
template void LogSoftmaxGatherBackward<double>(const double*, const int32_t*, const double*,
                                               const double*, int64_t, int64_t, double*);

}  // namespace pmol::cpu
