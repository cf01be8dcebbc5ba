// See host_transfer.h.
#include "pmol/objectives/host_transfer.h"

namespace pmol::objectives_internal {

Tensor TensorFromDoubles(const std::vector<double>& values, const Shape& shape, DType dtype,
                         Backend* backend) {
  PMOL_CHECK(NumElements(shape) == static_cast<int64_t>(values.size()));
  PMOL_CHECK(dtype == DType::kF64 || dtype == DType::kF32 || dtype == DType::kBF16);
  // Narrower types are rounded once from the doubles by the backend's Convert.
  const Tensor exact = Tensor::FromHost(values.data(), shape, DType::kF64, backend);
  return dtype == DType::kF64 ? exact : exact.ConvertTo(dtype);
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
