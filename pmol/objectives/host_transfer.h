// Host <-> device helpers shared by the objectives: the losses compute on host doubles
// (their inputs are small: per-sequence sums, router weights [N, S], a few hidden rows)
// and hand gradients back as tensors of the caller's dtype and backend.
#ifndef PMOL_OBJECTIVES_HOST_TRANSFER_H_
#define PMOL_OBJECTIVES_HOST_TRANSFER_H_

#include <vector>

#include "pmol/core/tensor.h"

namespace pmol::objectives_internal {

// A tensor of `shape`, `dtype` (f64, f32 or bf16: rounded once) on `backend` holding `values`.
Tensor TensorFromDoubles(const std::vector<double>& values, const Shape& shape, DType dtype,
                         Backend* backend);

// *dst += scale * values (element-wise, same element count; dst is f64, f32 or bf16).
void AccumulateDoubles(const std::vector<double>& values, double scale, Tensor* dst);

}  // namespace pmol::objectives_internal

#endif  // PMOL_OBJECTIVES_HOST_TRANSFER_H_
