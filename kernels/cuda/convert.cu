// Convert: n elements between f32, f64, bf16 and f16. Every value is widened to f64
// (exact for all four types), then narrowed to the destination with the host/device
// functions of kernels/dtype.h (one correct round-to-nearest-even, f16 subnormals kept,
// overflow to infinity, the same NaN patterns), so results are bit-identical to the
// CPU backend.
#include "kernels/cuda/common.cuh"
#include "kernels/dtype.h"
#include "kernels/cuda/launchers.h"

namespace pmol::cuda {
namespace {

template <DType kDt>
__device__ __forceinline__ double Load(const void* p, int64_t i) {
  if constexpr (kDt == DType::kF32) return static_cast<const float*>(p)[i];
  if constexpr (kDt == DType::kF64) return static_cast<const double*>(p)[i];
  if constexpr (kDt == DType::kBF16) return Bf16ToF32(static_cast<const uint16_t*>(p)[i]);
  if constexpr (kDt == DType::kF16) return F16ToF32(static_cast<const uint16_t*>(p)[i]);
  return 0.0;
}

template <DType kDt>
__device__ __forceinline__ void Store(void* p, int64_t i, double v) {
  if constexpr (kDt == DType::kF32) static_cast<float*>(p)[i] = static_cast<float>(v);
  if constexpr (kDt == DType::kF64) static_cast<double*>(p)[i] = v;
  if constexpr (kDt == DType::kBF16) static_cast<uint16_t*>(p)[i] = F64ToBf16(v);
  if constexpr (kDt == DType::kF16) static_cast<uint16_t*>(p)[i] = F64ToF16(v);
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
