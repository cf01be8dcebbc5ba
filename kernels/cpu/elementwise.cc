// Element-wise CPU kernels; see elementwise.h for the math. Loops are split over
// threads in contiguous chunks and written so the compiler vectorises them; SwiGLU's
// sigmoid in f32 uses the AVX2 exp of exp_avx2.h, 8 lanes at a time.
#include "kernels/cpu/elementwise.h"

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/exp_avx2.h"
#include "kernels/cpu/parallel.h"

namespace pmol::cpu {

template <typename T>
void Fill(T* x, T value, int64_t n) {
  ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] = value;
  });
}

template <typename T>
void Axpy(T alpha, const T* x, T* y, int64_t n) {
  ParallelFor(n, 2, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] += alpha * x[i];
  });
}

template <typename T>
void Scale(T alpha, T* x, int64_t n) {
  ParallelFor(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) x[i] *= alpha;
  });
}

template <typename T>
void AddBias(T* y, const T* bias, int64_t rows, int64_t cols) {
  ParallelFor(rows, cols, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* row = y + r * cols;
      for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
    }
  });
}

template <typename T>
void SumRows(const T* dy, int64_t rows, int64_t cols, T* dbias) {
  // Columns are independent: split columns over threads, each summing all rows in order
  // (deterministic whatever the thread count).
  ParallelFor(cols, rows, [&](int64_t b, int64_t e) {
    std::vector<T> acc(e - b, T(0));
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = dy + r * cols;
      for (int64_t c = b; c < e; ++c) acc[c - b] += row[c];
    }
    for (int64_t c = b; c < e; ++c) dbias[c] += acc[c - b];
  });
}

namespace {

double Load(DType dt, const void* p, int64_t i) {
  switch (dt) {
    case DType::kF32: return static_cast<const float*>(p)[i];
    case DType::kF64: return static_cast<const double*>(p)[i];
    case DType::kBF16: return Bf16ToF32(static_cast<const uint16_t*>(p)[i]);
    case DType::kF16: return F16ToF32(static_cast<const uint16_t*>(p)[i]);
    case DType::kI32: break;
  }
  PMOL_CHECK(false && "Convert: not a floating type");
  return 0;
}

void Store(DType dt, void* p, int64_t i, double v) {
  switch (dt) {
    case DType::kF32: static_cast<float*>(p)[i] = static_cast<float>(v); return;
    case DType::kF64: static_cast<double*>(p)[i] = v; return;
    case DType::kBF16: static_cast<uint16_t*>(p)[i] = F64ToBf16(v); return;
    case DType::kF16: static_cast<uint16_t*>(p)[i] = F64ToF16(v); return;
    case DType::kI32: break;
  }
  PMOL_CHECK(false && "Convert: not a floating type");
}

}  // namespace

void Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) {
  if (src_dt == dst_dt) {
    std::memcpy(dst, src, n * DTypeSize(src_dt));
    return;
  }
  if (src_dt == DType::kBF16 && dst_dt == DType::kF32) {  // the hot path when loading
    const uint16_t* s = static_cast<const uint16_t*>(src);
    float* d = static_cast<float*>(dst);
    ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) d[i] = Bf16ToF32(s[i]);
    });
    return;
  }
  if (src_dt == DType::kF32 && dst_dt == DType::kBF16) {  // mixed-precision write-back
    const float* s = static_cast<const float*>(src);
    uint16_t* d = static_cast<uint16_t*>(dst);
    ParallelFor(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) d[i] = F32ToBf16(s[i]);
    });
    return;
  }
  // Narrowing to bf16/f16 rounds once, whatever the source type (F64ToBf16/F64ToF16).
  ParallelFor(n, 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) Store(dst_dt, dst, i, Load(src_dt, src, i));
  });
}

// sigmoid(g) of 8 floats: e = exp(-|g|) in (0, 1] (Exp8NonPositive's domain), then
// 1 / (1 + e) for g >= 0 and e / (1 + e) below. A NaN gate gives s = 0, and g * s stays NaN.
inline __m256 Sigmoid8(__m256 g) {
  const __m256 neg_abs = _mm256_or_ps(g, _mm256_set1_ps(-0.0f));
  const __m256 e = Exp8NonPositive(neg_abs);
  const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
  const __m256 positive = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_GE_OQ);
  return _mm256_div_ps(_mm256_blendv_ps(e, _mm256_set1_ps(1.0f), positive), d);
}

template <typename T>
void SwiGluForward(const T* gate, const T* up, T* out, int64_t n) {
  ParallelFor(n, 8, [&](int64_t b, int64_t e) {
    int64_t i = b;
    if constexpr (std::is_same_v<T, float>) {
      for (; i + 8 <= e; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, Sigmoid8(g)), _mm256_loadu_ps(up + i)));
      }
    }
    for (; i < e; ++i) {
      T g = gate[i];
      T s = T(1) / (T(1) + std::exp(-g));
      out[i] = g * s * up[i];
    }
  });
}

template <typename T>
void SwiGluBackward(const T* gate, const T* up, const T* dout, T* dgate, T* dup, int64_t n) {
  ParallelFor(n, 10, [&](int64_t b, int64_t e) {
    int64_t i = b;
    if constexpr (std::is_same_v<T, float>) {
      const __m256 one = _mm256_set1_ps(1.0f);
      for (; i + 8 <= e; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i), d = _mm256_loadu_ps(dout + i);
        const __m256 s = Sigmoid8(g);
        _mm256_storeu_ps(dup + i, _mm256_mul_ps(d, _mm256_mul_ps(g, s)));
        const __m256 factor = _mm256_mul_ps(s, _mm256_fmadd_ps(g, _mm256_sub_ps(one, s), one));
        _mm256_storeu_ps(dgate + i, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(up + i)), factor));
      }
    }
    for (; i < e; ++i) {
      T g = gate[i];
      T s = T(1) / (T(1) + std::exp(-g));
      T silu = g * s;
      dup[i] = dout[i] * silu;
      dgate[i] = dout[i] * up[i] * s * (T(1) + g * (T(1) - s));
    }
  });
}

template <typename T>
void EmbeddingForward(const T* table, const int32_t* ids, int64_t n, int64_t dim, T* out) {
  ParallelFor(n, dim, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      std::memcpy(out + i * dim, table + static_cast<int64_t>(ids[i]) * dim, dim * sizeof(T));
    }
  });
}

template <typename T>
void EmbeddingBackward(const T* dout, const int32_t* ids, int64_t n, int64_t dim, T* dtable) {
  // Split the embedding width over threads so no two threads write the same element;
  // rows are added in token order (deterministic).
  ParallelFor(dim, n, [&](int64_t b, int64_t e) {
    for (int64_t i = 0; i < n; ++i) {
      T* dst = dtable + static_cast<int64_t>(ids[i]) * dim;
      const T* src = dout + i * dim;
      for (int64_t c = b; c < e; ++c) dst[c] += src[c];
    }
  });
}

#define PMOL_INSTANTIATE(T)                                                                \
  template void Fill<T>(T*, T, int64_t);                                                  \
  template void Axpy<T>(T, const T*, T*, int64_t);                                        \
  template void Scale<T>(T, T*, int64_t);                                                 \
  template void AddBias<T>(T*, const T*, int64_t, int64_t);                               \
  template void SumRows<T>(const T*, int64_t, int64_t, T*);                               \
  template void SwiGluForward<T>(const T*, const T*, T*, int64_t);                        \
  template void SwiGluBackward<T>(const T*, const T*, const T*, T*, T*, int64_t);         \
  template void EmbeddingForward<T>(const T*, const int32_t*, int64_t, int64_t, T*);      \
  template void EmbeddingBackward<T>(const T*, const int32_t*, int64_t, int64_t, T*);
PMOL_INSTANTIATE(float)
PMOL_INSTANTIATE(double)
#undef PMOL_INSTANTIATE
// bf16 tables (mixed precision): rows copied as they are.
template void EmbeddingForward<Bf16>(const Bf16*, const int32_t*, int64_t, int64_t, Bf16*);

}  // namespace pmol::cpu
