// Expert subsets of the stacked LoRA matrices; see expert_slices.h.
#include "pmol/adapters/expert_slices.h"

#include "kernels/check.h"

namespace pmol {
namespace {

// Copies, for every expert j of the subset and every row, the r-wide block between the
// subset's matrix (block j of a row of `local_cols` elements) and the full matrix (block
// e_j of a row of `full_cols` elements); to_full picks the direction.
void CopyBlocks(const std::vector<int32_t>& experts, int64_t block, int64_t rows, int64_t local_cols,
                int64_t full_cols, Tensor& local, Tensor& full, bool to_full) {
  Backend* be = full.backend();
  const size_t es = DTypeSize(full.dtype());
  char* l = static_cast<char*>(local.data());
  char* f = static_cast<char*>(full.data());
  for (int64_t row = 0; row < rows; ++row) {
    for (size_t j = 0; j < experts.size(); ++j) {
      char* lp = l + (row * local_cols + static_cast<int64_t>(j) * block) * es;
      char* fp = f + (row * full_cols + experts[j] * block) * es;
      if (to_full) {
        be->CopyOnDevice(fp, lp, block * es);
      } else {
        be->CopyOnDevice(lp, fp, block * es);
      }
    }
  }
}

}  // namespace

Tensor SliceExpertRows(const Tensor& a, const std::vector<int32_t>& experts, int64_t rank) {
  const int64_t d_in = a.dim(1), count = static_cast<int64_t>(experts.size());
  Tensor local = Tensor::Empty({count * rank, d_in}, a.dtype(), a.backend());
  Tensor full = a;  // shares storage; read only below
  CopyBlocks(experts, rank * d_in, 1, count * rank * d_in, a.numel(), local, full, false);
  return local;
}

Tensor SliceExpertColumns(const Tensor& b, const std::vector<int32_t>& experts, int64_t rank) {
  const int64_t d_out = b.dim(0), count = static_cast<int64_t>(experts.size());
  Tensor local = Tensor::Empty({d_out, count * rank}, b.dtype(), b.backend());
  Tensor full = b;
  CopyBlocks(experts, rank, d_out, count * rank, b.dim(1), local, full, false);
  return local;
}

void PlaceExpertRows(const Tensor& local, const std::vector<int32_t>& experts, int64_t rank, Tensor& full) {
  PMOL_CHECK(local.dim(0) == static_cast<int64_t>(experts.size()) * rank && local.dim(1) == full.dim(1));
  Tensor l = local;
  CopyBlocks(experts, rank * full.dim(1), 1, local.numel(), full.numel(), l, full, true);
}

void PlaceExpertColumns(const Tensor& local, const std::vector<int32_t>& experts, int64_t rank,
                        Tensor& full) {
  PMOL_CHECK(local.dim(1) == static_cast<int64_t>(experts.size()) * rank && local.dim(0) == full.dim(0));
  Tensor l = local;
  CopyBlocks(experts, rank, full.dim(0), local.dim(1), full.dim(1), l, full, true);
}

}  // namespace pmol
