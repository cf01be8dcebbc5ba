// Backend::Convert between f32, f64, bf16 and f16, exactly (conversions are single
// IEEE roundings, so every result is checked bit for bit; NaN only for NaN-ness, since
// payloads are not specified), against two oracles:
//  1. the scalar functions of kernels/dtype.h (exhaustively tested in //tests:dtype_test):
//     decode the source to f32/f64, encode to the destination;
//  2. an independent round-to-nearest-even check: the result c must satisfy
//     mid(c-, c) <= |v| <= mid(c, c+) for its neighbours c-, c+ in the destination
//     format (ties only onto an even mantissa), with the overflow threshold
//     max + ulp(max)/2 -> inf, evaluated exactly in long double.
// Sources: every bf16 and f16 bit pattern; random f32 bit patterns; random f64 values
// spanning both half formats' normal, subnormal and overflow ranges; +-0, +-inf, NaN and
// hand-made rounding ties.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

constexpr DType kFloatTypes[] = {DType::kF32, DType::kF64, DType::kBF16, DType::kF16};

// A buffer of n elements of one floating type.
struct Buffer {
  DType dt;
  std::vector<uint8_t> bytes;
  Buffer(DType type, size_t n) : dt(type), bytes(n * DTypeSize(type)) {}
  size_t size() const { return bytes.size() / DTypeSize(dt); }
  // Raw bits of element i (f64: all 64).
  uint64_t Bits(size_t i) const {
    uint64_t b = 0;
    std::memcpy(&b, bytes.data() + i * DTypeSize(dt), DTypeSize(dt));
    return b;
  }
  void SetBits(size_t i, uint64_t b) {
    std::memcpy(bytes.data() + i * DTypeSize(dt), &b, DTypeSize(dt));
  }
};

// Value of raw bits via kernels/dtype.h (exact).
long double Decode(DType dt, uint64_t bits) {
  switch (dt) {
    case DType::kF32: {
      float f;
      const uint32_t b = static_cast<uint32_t>(bits);
      std::memcpy(&f, &b, 4);
      return f;
    }
    case DType::kF64: {
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
    case DType::kBF16: return Bf16ToF32(static_cast<uint16_t>(bits));
    case DType::kF16: return F16ToF32(static_cast<uint16_t>(bits));
    case DType::kI32: break;
  }
  ADD_FAILURE() << "not a float type";
  return 0;
}

// Oracle 1: the destination bits by the dtype.h scalar functions (via f32 for halves).
uint64_t EncodeViaDtypeH(DType dt, long double v) {
  switch (dt) {
    case DType::kF32: {
      const float f = static_cast<float>(static_cast<double>(v));
      uint32_t b;
      std::memcpy(&b, &f, 4);
      return b;
    }
    case DType::kF64: {
      const double d = static_cast<double>(v);
      uint64_t b;
      std::memcpy(&b, &d, 8);
      return b;
    }
    case DType::kBF16: return F32ToBf16(static_cast<float>(static_cast<double>(v)));
    case DType::kF16: return F32ToF16(static_cast<float>(static_cast<double>(v)));
    case DType::kI32: break;
  }
  ADD_FAILURE() << "not a float type";
  return 0;
}

struct Format {
  int bits;            // total width
  uint64_t inf_bits;   // +inf
};
Format FormatOf(DType dt) {
  switch (dt) {
    case DType::kF32: return {32, 0x7f800000u};
    case DType::kF64: return {64, 0x7ff0000000000000u};
    case DType::kBF16: return {16, 0x7f80u};
    case DType::kF16: return {16, 0x7c00u};
    case DType::kI32: break;
  }
  return {0, 0};
}

// Oracle 2: is `bits` (in dt) the round-to-nearest-even of v? Explains why not in *why.
bool IsNearestEven(DType dt, uint64_t bits, long double v, std::string* why) {
  const Format f = FormatOf(dt);
  const uint64_t sign_mask = uint64_t{1} << (f.bits - 1);
  const uint64_t mag = bits & ~sign_mask;
  const bool got_nan = mag > f.inf_bits;
  if (std::isnan(v) || got_nan) {
    *why = "NaN mismatch";
    return std::isnan(v) && got_nan;
  }
  if (((bits & sign_mask) != 0) != std::signbit(v)) {
    *why = "sign";
    return false;
  }
  const long double a = std::abs(v);
  const long double max = Decode(dt, f.inf_bits - 1);
  // The value the inf pattern stands for when rounding: the next step after max.
  auto value = [&](uint64_t m) {
    return m == f.inf_bits ? 2 * max - Decode(dt, f.inf_bits - 2) : Decode(dt, m);
  };
  if (std::isinf(a)) {
    *why = "inf must stay inf";
    return mag == f.inf_bits;
  }
  const long double c = value(mag);
  const long double down = mag > 0 ? value(mag - 1) : -value(1);
  const long double lo = (down + c) / 2;
  const long double hi = mag == f.inf_bits ? std::numeric_limits<long double>::infinity()
                                           : (c + value(mag + 1)) / 2;
  if (a < lo || a > hi) {
    *why = "not the nearest value";
    return false;
  }
  if ((a == lo || a == hi) && (mag & 1) != 0) {
    *why = "tie not rounded to even";
    return false;
  }
  return true;
}

// Source values for a type: every pattern of a 16-bit type; random bit patterns plus
// specials for f32; for f64, random values across the half formats' ranges, specials,
// and the ties of `extra`.
Buffer Sources(DType dt, const std::vector<double>& extra = {}) {
  std::mt19937_64 rng(81);
  const double specials[] = {0.0,     -0.0,     1.0,      -1.0,     65504.0, 65519.99,
                             65520.0, -65520.0, 3.4e38,   -3.4e38,  1e39,    -1e39,
                             6e-8,    2.9e-8,   3.0e-8,   1e-45,    -1e-45,  1e-300,
                             std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(),
                             std::numeric_limits<double>::quiet_NaN()};
  if (dt == DType::kBF16 || dt == DType::kF16) {
    Buffer b(dt, 65536);
    for (uint64_t i = 0; i < 65536; ++i) b.SetBits(i, i);
    return b;
  }
  const size_t n_random = 100003;
  const size_t n_special = sizeof(specials) / sizeof(specials[0]);
  Buffer b(dt, n_random + n_special + extra.size());
  std::uniform_real_distribution<double> exponent(-30.0, 20.0), sign(-1.0, 1.0);
  for (size_t i = 0; i < n_random; ++i) {
    if (dt == DType::kF32) {
      b.SetBits(i, static_cast<uint32_t>(rng()));
    } else {
      const double v = std::copysign(std::exp2(exponent(rng)), sign(rng));
      b.SetBits(i, EncodeViaDtypeH(DType::kF64, v));
    }
  }
  for (size_t i = 0; i < n_special + extra.size(); ++i) {
    const double v = i < n_special ? specials[i] : extra[i - n_special];
    b.SetBits(n_random + i, EncodeViaDtypeH(dt, v));
  }
  return b;
}

Buffer Convert(const Buffer& src, DType dst_dt) {
  Buffer dst(dst_dt, src.size());
  Cpu(2)->Convert(src.dt, src.bytes.data(), dst_dt, dst.bytes.data(), src.size());
  return dst;
}

// f64 -> bf16/f16 goes through f32 in the kernel; see F64ToHalfTypesRoundOnce.
bool IsF64ToHalf(DType src, DType dst) {
  return src == DType::kF64 && (dst == DType::kBF16 || dst == DType::kF16);
}

TEST(ConvertTest, MatchesDtypeScalarFunctions) {
  for (DType src_dt : kFloatTypes) {
    const Buffer src = Sources(src_dt);
    for (DType dst_dt : kFloatTypes) {
      if (IsF64ToHalf(src_dt, dst_dt)) continue;
      SCOPED_TRACE(std::string(DTypeName(src_dt)) + " -> " + std::string(DTypeName(dst_dt)));
      const Buffer dst = Convert(src, dst_dt);
      int failures = 0;
      for (size_t i = 0; i < src.size() && failures < 5; ++i) {
        const long double v = Decode(src_dt, src.Bits(i));
        const uint64_t got = dst.Bits(i);
        std::string error;
        if (src_dt == dst_dt) {  // a copy: every bit, NaN payloads included
          if (got != src.Bits(i)) error = "bits changed";
        } else if (std::isnan(v)) {
          if (!std::isnan(Decode(dst_dt, got))) error = "NaN lost";
        } else if (got != EncodeViaDtypeH(dst_dt, v)) {
          char line[120];
          std::snprintf(line, sizeof(line), "%.17g -> bits 0x%llx, want 0x%llx",
                        static_cast<double>(v), static_cast<unsigned long long>(got),
                        static_cast<unsigned long long>(EncodeViaDtypeH(dst_dt, v)));
          error = line;
        }
        if (!error.empty()) {
          ++failures;
          ADD_FAILURE() << "element " << i << ": " << error;
        }
      }
    }
  }
}

TEST(ConvertTest, RoundsToNearestEven) {
  for (DType src_dt : kFloatTypes) {
    const Buffer src = Sources(src_dt);
    for (DType dst_dt : kFloatTypes) {
      if (IsF64ToHalf(src_dt, dst_dt)) continue;
      SCOPED_TRACE(std::string(DTypeName(src_dt)) + " -> " + std::string(DTypeName(dst_dt)));
      const Buffer dst = Convert(src, dst_dt);
      int failures = 0;
      for (size_t i = 0; i < src.size() && failures < 5; ++i) {
        const long double v = Decode(src_dt, src.Bits(i));
        std::string why;
        if (!IsNearestEven(dst_dt, dst.Bits(i), v, &why)) {
          ++failures;
          ADD_FAILURE() << i << ": " << static_cast<double>(v) << " -> "
                        << static_cast<double>(Decode(dst_dt, dst.Bits(i))) << ": " << why;
        }
      }
    }
  }
}

TEST(ConvertTest, F64ToHalfTypesRoundOnce) {
  // Rounding f64 to f32 first and then to bf16/f16 rounds twice: a value just above (below)
  // a half-format tie first lands exactly on the tie, which then goes to even, i.e. the
  // wrong way. Hand-made cases, then random f64 values.
  const std::vector<double> ties = {
      1.0 + 0x1p-8 + 0x1p-30,           // bf16: nearest 1 + 2^-7, double rounding gives 1
      1.0 + 0x1p-7 + 0x1p-8 - 0x1p-30,  // bf16: nearest 1 + 2^-7, double rounding gives 1 + 2^-6
      1.0 + 0x1p-11 + 0x1p-30,          // f16: nearest 1 + 2^-10, double rounding gives 1
      -(1.0 + 0x1p-11 + 0x1p-30),
      0x1p-25 + 0x1p-50,                // f16 subnormal: nearest 2^-24, double rounding gives 0
  };
  const Buffer src = Sources(DType::kF64, ties);
  for (DType dst_dt : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE("F64 -> " + std::string(DTypeName(dst_dt)));
    const Buffer dst = Convert(src, dst_dt);
    int wrong = 0;
    std::string examples;
    for (size_t i = 0; i < src.size(); ++i) {
      const long double v = Decode(DType::kF64, src.Bits(i));
      std::string why;
      if (!IsNearestEven(dst_dt, dst.Bits(i), v, &why)) {
        if (++wrong <= 5) {
          char line[160];
          std::snprintf(line, sizeof(line), "\n  %.17g -> %.9g (%s)", static_cast<double>(v),
                        static_cast<double>(Decode(dst_dt, dst.Bits(i))), why.c_str());
          examples += line;
        }
      }
    }
    EXPECT_EQ(wrong, 0) << wrong << " of " << src.size() << " values (" << ties.size()
                        << " hand-made ties) not rounded to nearest even:" << examples;
  }
}

}  // namespace
}  // namespace pmol::testing
