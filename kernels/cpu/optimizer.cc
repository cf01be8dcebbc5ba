// Optimizer CPU kernels; see optimizer.h for the math. AdamW follows torch's order of
// operations with its scalars rounded to T once, as torch does for a T tensor.
#include "kernels/cpu/optimizer.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void AdamWStep(const AdamWScalars& s, T* p, const T* g, T* m, T* v, int64_t n) {
  const T decay = static_cast<T>(1.0 - s.lr * s.weight_decay);
  const T beta1 = static_cast<T>(s.beta1);
  const T one_minus_beta1 = static_cast<T>(1.0 - s.beta1);
  const T beta2 = static_cast<T>(s.beta2);
  const T one_minus_beta2 = static_cast<T>(1.0 - s.beta2);
  const T bc2_sqrt = static_cast<T>(std::sqrt(s.bias_correction2));
  const T neg_step_size = static_cast<T>(-(s.lr / s.bias_correction1));
  const T eps = static_cast<T>(s.eps);
  ParallelFor(n, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const T gi = g[i];
      const T mi = m[i] * beta1 + one_minus_beta1 * gi;
      const T vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
      const T denom = std::sqrt(vi) / bc2_sqrt + eps;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * decay + neg_step_size * (mi / denom);
    }
  });
}

template <typename T>
double SumSquares(const T* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kSumSquaresChunk - 1) / kSumSquaresChunk;
  std::vector<double> partial(chunks);
  ParallelFor(chunks, kSumSquaresChunk, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const int64_t begin = c * kSumSquaresChunk;
      const int64_t end = begin + kSumSquaresChunk < n ? begin + kSumSquaresChunk : n;
      double lane[kSumSquaresLanes] = {};
      int64_t i = begin;
      for (; i + kSumSquaresLanes <= end; i += kSumSquaresLanes) {
        for (int k = 0; k < kSumSquaresLanes; ++k) {
          const double xi = static_cast<double>(x[i + k]);
          lane[k] += xi * xi;
        }
      }
      for (int k = 0; i < end; ++i, ++k) {
        const double xi = static_cast<double>(x[i]);
        lane[k] += xi * xi;
      }
      double total = 0.0;
      for (int k = 0; k < kSumSquaresLanes; ++k) total += lane[k];
      partial[c] = total;
    }
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

template void AdamWStep<float>(const AdamWScalars&, float*, const float*, float*, float*,
                               int64_t);
template void AdamWStep<double>(const AdamWScalars&, double*, const double*, double*, double*,
                                int64_t);
template double SumSquares<float>(const float*, int64_t);
template double SumSquares<double>(const double*, int64_t);

}  // namespace pmol::cpu
