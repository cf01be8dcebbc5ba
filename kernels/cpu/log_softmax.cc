// Target log-probabilities on the CPU; see log_softmax.h. The row sum of exponentials is
// accumulated in double so long vocabularies do not lose the small terms.
#include "kernels/cpu/log_softmax.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void LogSoftmaxGather(const T* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                      T* logp, T* lse) {
  ParallelFor(rows, 4 * vocab, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const T* x = logits + r * vocab;
      const T m = *std::max_element(x, x + vocab);
      double sum = 0.0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(x[v] - m));
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
