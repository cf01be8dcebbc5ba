// Gradient-norm clipping; see grad_clip.h.
#include "pmol/optim/grad_clip.h"

#include <cmath>
#include <utility>
#include <vector>

#include "kernels/check.h"

namespace pmol {
namespace {

bool IsComputeType(DType dt) { return dt == DType::kF32 || dt == DType::kF64; }

}  // namespace

double GradSumOfSquares(const std::vector<Tensor>& grads) {
  // One f64 accumulator per backend, in order of first appearance.
  std::vector<std::pair<Backend*, Tensor>> accumulators;
  for (const Tensor& g : grads) {
    if (!g.defined() || g.numel() == 0) continue;
    PMOL_CHECK(IsFloating(g.dtype()));
    Backend* backend = g.backend();
    Tensor* acc = nullptr;
    for (auto& [b, t] : accumulators) {
      if (b == backend) acc = &t;
    }
    if (acc == nullptr) {
      accumulators.emplace_back(backend, Tensor::Zeros({}, DType::kF64, backend));
      acc = &accumulators.back().second;
    }
    if (IsComputeType(g.dtype())) {
      backend->SumSquares(g.dtype(), g.data(), g.numel(), acc->data());
    } else {
      const Tensor g32 = g.ConvertTo(DType::kF32);
      backend->SumSquares(DType::kF32, g32.data(), g32.numel(), acc->data());
    }
  }
  double total = 0.0;
  for (const auto& [backend, acc] : accumulators) total += acc.ToDoubles()[0];
  return total;
}

double GlobalGradNorm(const std::vector<Tensor>& grads) { return std::sqrt(GradSumOfSquares(grads)); }

double ClipGradNorm(std::vector<Tensor>& grads, double max_norm) {
  const double norm = GlobalGradNorm(grads);
  ScaleToMaxNorm(grads, norm, max_norm);
  return norm;
}

void ScaleToMaxNorm(std::vector<Tensor>& grads, double norm, double max_norm) {
  if (!(max_norm > 0) || !std::isfinite(norm)) return;
  const double coef = max_norm / (norm + kClipGradNormEps);
  if (!(coef < 1.0)) return;
  for (Tensor& g : grads) {
    if (!g.defined() || g.numel() == 0) continue;
    Backend* backend = g.backend();
    if (IsComputeType(g.dtype())) {
      backend->Scale(g.dtype(), coef, g.data(), g.numel());
    } else {
      Tensor g32 = g.ConvertTo(DType::kF32);
      backend->Scale(DType::kF32, coef, g32.data(), g32.numel());
      backend->Convert(DType::kF32, g32.data(), g.dtype(), g.data(), g.numel());
    }
  }
}

}  // namespace pmol
