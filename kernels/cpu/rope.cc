// Rotary position embedding on the CPU; see rope.h for the math.
#include "kernels/cpu/rope.h"

#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void ApplyRope(T* x, int64_t tokens, int64_t heads, int64_t head_dim, const T* cos, const T* sin,
               const int32_t* positions, bool inverse) {
  const int64_t half = head_dim / 2;
  const T sign = inverse ? T(-1) : T(1);
  ParallelFor(tokens, 3 * heads * head_dim, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const T* c = cos + static_cast<int64_t>(positions[t]) * half;
      const T* s = sin + static_cast<int64_t>(positions[t]) * half;
      for (int64_t h = 0; h < heads; ++h) {
        T* lo = x + (t * heads + h) * head_dim;
        T* hi = lo + half;
        for (int64_t j = 0; j < half; ++j) {
          T a = lo[j], bb = hi[j], sj = sign * s[j];
          lo[j] = a * c[j] - bb * sj;
          hi[j] = bb * c[j] + a * sj;
        }
      }
    }
  });
}

template void ApplyRope<float>(float*, int64_t, int64_t, int64_t, const float*, const float*,
                               const int32_t*, bool);
template void ApplyRope<double>(double*, int64_t, int64_t, int64_t, const double*, const double*,
                                const int32_t*, bool);

}  // namespace pmol::cpu
