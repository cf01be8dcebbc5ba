// See host_transfer.h.
#include "pmol/objectives/host_transfer.h"

namespace pmol::objectives_internal {

Tensor TensorFromDoubles(const std::vector<double>& values, const Shape& shape, DType dtype,
                         Backend* backend) {
  PMOL_CHECK(NumElements(shape) == static_cast<int64_t>(values.size()));
  if (dtype == DType::kF64) return Tensor::FromHost(values.data(), shape, dtype, backend);
  if (dtype == DType::kBF16)  // rounded once from the doubles
    return Tensor::FromHost(values.data(), shape, DType::kF64, backend).ConvertTo(dtype);
  PMOL_CHECK(dtype == DType::kF32);
  std::vector<float> f(values.begin(), values.end());
  return Tensor::FromHost(f.data(), shape, dtype, backend);
}

void AccumulateDoubles(const std::vector<double>& values, double scale, Tensor* dst) {
  PMOL_CHECK(dst != nullptr && dst->defined());
  PMOL_CHECK(dst->numel() == static_cast<int64_t>(values.size()));
  PMOL_CHECK(dst->dtype() == DType::kF32 || dst->dtype() == DType::kF64 ||
             dst->dtype() == DType::kBF16);
  Tensor tmp = TensorFromDoubles(values, dst->shape(), dst->dtype(), dst->backend());
  dst->backend()->Axpy(dst->dtype(), scale, tmp.data(), dst->data(), dst->numel());
}

}  // namespace pmol::objectives_internal
