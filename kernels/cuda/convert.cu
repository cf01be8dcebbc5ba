// Convert: n elements between f32, f64, bf16 and f16. Every value is widened to f64
// (exact for all four types), then narrowed to the destination: f64 -> f32 rounds to
// nearest-even in hardware; bf16 and f16 are produced from the f32 value with the same
// bit manipulation as kernels/dtype.h (round-to-nearest-even, f16 subnormals kept,
// overflow to infinity, the same NaN patterns), so results are bit-identical to the
// CPU backend. f64 -> bf16/f16 therefore rounds twice (via f32), as the CPU does.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

__device__ __forceinline__ float Bf16BitsToF32(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

__device__ __forceinline__ uint16_t F32ToBf16Bits(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

__device__ __forceinline__ float F16BitsToF32(uint16_t h) {
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
  return __uint_as_float(bits);
}

__device__ __forceinline__ uint16_t F32ToF16Bits(float f) {
  uint32_t bits = __float_as_uint(f);
  uint32_t sign = (bits >> 16) & 0x8000u;
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow
  if (abs < 0x38800000u) {  // subnormal or zero result
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t total = 126 - exp;
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

template <DType kDt>
__device__ __forceinline__ double Load(const void* p, int64_t i) {
  if constexpr (kDt == DType::kF32) return static_cast<const float*>(p)[i];
  if constexpr (kDt == DType::kF64) return static_cast<const double*>(p)[i];
  if constexpr (kDt == DType::kBF16) return Bf16BitsToF32(static_cast<const uint16_t*>(p)[i]);
  if constexpr (kDt == DType::kF16) return F16BitsToF32(static_cast<const uint16_t*>(p)[i]);
  return 0.0;
}

template <DType kDt>
__device__ __forceinline__ void Store(void* p, int64_t i, double v) {
  if constexpr (kDt == DType::kF32) static_cast<float*>(p)[i] = static_cast<float>(v);
  if constexpr (kDt == DType::kF64) static_cast<double*>(p)[i] = v;
  if constexpr (kDt == DType::kBF16) {
    static_cast<uint16_t*>(p)[i] = F32ToBf16Bits(static_cast<float>(v));
  }
  if constexpr (kDt == DType::kF16) {
    static_cast<uint16_t*>(p)[i] = F32ToF16Bits(static_cast<float>(v));
  }
}

template <DType kSrc, DType kDst>
__global__ void ConvertKernel(const void* src, void* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    Store<kDst>(dst, i, Load<kSrc>(src, i));
  }
}

template <DType kSrc>
void LaunchFrom(const void* src, DType dst_dt, void* dst, int64_t n, cudaStream_t stream) {
  const unsigned grid = GridFor(n);
  switch (dst_dt) {
    case DType::kF32:
      ConvertKernel<kSrc, DType::kF32><<<grid, kThreads, 0, stream>>>(src, dst, n);
      break;
    case DType::kF64:
      ConvertKernel<kSrc, DType::kF64><<<grid, kThreads, 0, stream>>>(src, dst, n);
      break;
    case DType::kBF16:
      ConvertKernel<kSrc, DType::kBF16><<<grid, kThreads, 0, stream>>>(src, dst, n);
      break;
    case DType::kF16:
      ConvertKernel<kSrc, DType::kF16><<<grid, kThreads, 0, stream>>>(src, dst, n);
      break;
    default:
      PMOL_CUDA_REQUIRE(false, "Convert: destination must be f32, f64, bf16 or f16");
  }
  PMOL_CUDA_CHECK_LAUNCH("ConvertKernel");
}

}  // namespace

void LaunchConvert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n,
                   cudaStream_t stream) {
  if (n <= 0) return;
  switch (src_dt) {
    case DType::kF32: LaunchFrom<DType::kF32>(src, dst_dt, dst, n, stream); break;
    case DType::kF64: LaunchFrom<DType::kF64>(src, dst_dt, dst, n, stream); break;
    case DType::kBF16: LaunchFrom<DType::kBF16>(src, dst_dt, dst, n, stream); break;
    case DType::kF16: LaunchFrom<DType::kF16>(src, dst_dt, dst, n, stream); break;
    default: PMOL_CUDA_REQUIRE(false, "Convert: source must be f32, f64, bf16 or f16");
  }
}

}  // namespace pmol::cuda
