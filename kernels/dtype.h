// Element types pmol stores and computes in, and the scalar conversions between them.
//   bf16: the upper 16 bits of an IEEE f32 (round-to-nearest-even on narrowing).
//   f16:  IEEE binary16 (round-to-nearest-even on narrowing, subnormals kept).
// f64 is a CPU compute type used by the double-precision oracle tests; i32 holds ids.
// The scalar conversions are host and device functions: the CUDA kernels use these very
// bit manipulations, so both backends round identically.
#ifndef PMOL_KERNELS_DTYPE_H_
#define PMOL_KERNELS_DTYPE_H_

#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__CUDACC__)
#define PMOL_HOST_DEVICE __host__ __device__
#else
#define PMOL_HOST_DEVICE
#endif

namespace pmol {

enum class DType : uint8_t { kF32, kF64, kBF16, kF16, kI32 };

inline size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF64: return 8;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

// Names as safetensors spells them.
inline const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kI32: return "I32";
  }
  return "?";
}

inline bool ParseDTypeName(std::string_view name, DType* dtype) {
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32}) {
    if (name == DTypeName(d)) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

inline bool IsFloating(DType dtype) { return dtype != DType::kI32; }

// The type a kernel computes in for operands stored as `dtype`, and the type of the side
// statistics and reductions it keeps (kernels/backend.h, mixed precision): f64 for f64,
// f32 for everything narrower.
inline DType AccumDType(DType dtype) { return dtype == DType::kF64 ? DType::kF64 : DType::kF32; }

PMOL_HOST_DEVICE inline float Bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

PMOL_HOST_DEVICE inline uint16_t F32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

PMOL_HOST_DEVICE inline float F16ToF32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

PMOL_HOST_DEVICE inline uint16_t F32ToF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // result is subnormal or zero
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t total = 126 - exp;  // mantissa bits below f16's 2^-24 unit
    uint32_t half = 1u << (total - 1);
    uint32_t rest = mant & ((1u << total) - 1);
    uint32_t result = mant >> total;
    if (rest > half || (rest == half && (result & 1u))) ++result;
    return static_cast<uint16_t>(sign | result);
  }
  uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  uint32_t result = ((rounded >> 13) - ((127 - 15) << 10));
  return static_cast<uint16_t>(sign | result);
}

// A bf16 value in memory, the storage type of mixed-precision kernels (both backends):
// reading it widens to f32 (exact), assigning a float rounds to nearest even. Assigning
// another Bf16 copies the bits.
struct Bf16 {
  uint16_t bits;
  PMOL_HOST_DEVICE operator float() const { return Bf16ToF32(bits); }
  PMOL_HOST_DEVICE Bf16& operator=(float f) {
    bits = F32ToBf16(f);
    return *this;
  }
  PMOL_HOST_DEVICE Bf16& operator+=(float f) { return *this = static_cast<float>(*this) + f; }
};
static_assert(sizeof(Bf16) == 2);

// f64 -> f32 with round-to-odd: an inexact result gets its last bit set (after
// truncation toward zero), so that a second rounding to bf16 or f16 (<= 11 significant
// bits, at most 24 - 2) is the correctly rounded f64 -> bf16/f16 result. Rounding to
// nearest twice can land exactly on a tie and then round the wrong way.
PMOL_HOST_DEVICE inline float F64ToF32RoundToOdd(double d) {
  float f = static_cast<float>(d);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u && static_cast<double>(f) != d) {
    const bool away_from_zero = d > 0 ? static_cast<double>(f) > d : static_cast<double>(f) < d;
    if (away_from_zero) bits -= 1;
    bits |= 1u;
    std::memcpy(&f, &bits, 4);
  }
  return f;
}

PMOL_HOST_DEVICE inline uint16_t F64ToBf16(double d) { return F32ToBf16(F64ToF32RoundToOdd(d)); }
PMOL_HOST_DEVICE inline uint16_t F64ToF16(double d) { return F32ToF16(F64ToF32RoundToOdd(d)); }

}  // namespace pmol

#endif  // PMOL_KERNELS_DTYPE_H_
