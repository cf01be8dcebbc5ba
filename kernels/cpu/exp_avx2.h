// exp(x) of 8 floats with AVX2/FMA, for x <= 0 (softmax arguments x - max): Cody-Waite
// range reduction x = n ln2 + r with ln2 split in two constants, |r| <= ln2/2, the degree-7
// polynomial of Cephes' expf for e^r, and the scale 2^n built in the exponent bits.
// Relative error below 2 ulp of float (tests/kernels/exp_avx2_test checks 2^-22 against
// double exp over [-87.3, 0]). Arguments below -87.33654 (where e^x leaves float's normal
// range) give 0; callers keep NaN and +inf out (the log-softmax routes such rows to the
// scalar path).
#ifndef PMOL_KERNELS_CPU_EXP_AVX2_H_
#define PMOL_KERNELS_CPU_EXP_AVX2_H_

#include <immintrin.h>

namespace pmol::cpu {

inline constexpr float kExp8Lowest = -87.33654f;

inline __m256 Exp8NonPositive(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(kExp8Lowest);
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lowest);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_EXP_AVX2_H_
