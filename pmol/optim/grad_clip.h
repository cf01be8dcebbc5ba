// Global gradient-norm clipping, as torch.nn.utils.clip_grad_norm_ (norm_type 2):
//   total_norm = sqrt(sum over every gradient of sum_i g_i^2)
//   clip_coef  = max_norm / (total_norm + 1e-6);  every g *= clip_coef when clip_coef < 1
// The sum of squares runs on each gradient's backend (Backend::SumSquares: f64, fixed
// order), so the norm is deterministic and the gradients never leave the device; only
// one f64 per backend is copied to the host. Gradients are F32 or F64 (BF16/F16 are
// converted for the norm and scaled through an f32 copy).
//
// Differences from torch: the norm is accumulated in f64 (torch: in the gradients' dtype,
// as a norm of per-tensor norms), and a non-finite norm (NaN or inf) leaves the gradients
// untouched (torch would multiply them by NaN or 0); it is returned so the caller can
// skip the step.
#ifndef PMOL_OPTIM_GRAD_CLIP_H_
#define PMOL_OPTIM_GRAD_CLIP_H_

#include <vector>

#include "pmol/core/tensor.h"

namespace pmol {

inline constexpr double kClipGradNormEps = 1e-6;

// The sum of squares of all gradients together (f64). Empty list: 0.
double GradSumOfSquares(const std::vector<Tensor>& grads);

// The L2 norm of all gradients together, as if concatenated. Empty list: 0.
double GlobalGradNorm(const std::vector<Tensor>& grads);

// Scales every gradient by max_norm / (norm + 1e-6) when that is below 1, given the
// global norm (computed elsewhere, e.g. over the shards of several ranks). Does nothing
// when max_norm <= 0 or the norm is not finite.
void ScaleToMaxNorm(std::vector<Tensor>& grads, double norm, double max_norm);

// Returns the pre-clip global norm and scales every gradient in place by
// max_norm / (norm + 1e-6) when that is below 1. max_norm <= 0 turns clipping off (the
// norm is still returned).
double ClipGradNorm(std::vector<Tensor>& grads, double max_norm);

}  // namespace pmol

#endif  // PMOL_OPTIM_GRAD_CLIP_H_
