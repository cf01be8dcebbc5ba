// Cutting a subset of experts out of the stacked LoRA matrices and putting it back (for
// expert parallelism, where a rank holds only its own experts). With rank r and the
// experts e_0 < e_1 < ... of the subset:
//   A [E*r, d_in]   local A rows [j*r, (j+1)*r)     = A rows    [e_j*r, (e_j+1)*r)
//   B [d_out, E*r]  local B columns [j*r, (j+1)*r)  = B columns [e_j*r, (e_j+1)*r)
#ifndef PMOL_ADAPTERS_EXPERT_SLICES_H_
#define PMOL_ADAPTERS_EXPERT_SLICES_H_

#include <cstdint>
#include <vector>

#include "pmol/core/tensor.h"

namespace pmol {

// The subset's A rows ([experts.size()*r, d_in]) or B columns ([d_out, experts.size()*r]).
Tensor SliceExpertRows(const Tensor& a, const std::vector<int32_t>& experts, int64_t rank);
Tensor SliceExpertColumns(const Tensor& b, const std::vector<int32_t>& experts, int64_t rank);
// The inverse: writes `local` into its experts' rows / columns of `full`.
void PlaceExpertRows(const Tensor& local, const std::vector<int32_t>& experts, int64_t rank, Tensor& full);
void PlaceExpertColumns(const Tensor& local, const std::vector<int32_t>& experts, int64_t rank, Tensor& full);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_EXPERT_SLICES_H_
