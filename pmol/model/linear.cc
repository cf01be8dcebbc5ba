// Dense linear forward/backward as GEMMs; see linear.h.
#include "pmol/model/linear.h"

namespace pmol {

Tensor LinearForward(const Tensor& x, const LinearWeights& w) {
  const int64_t n = x.dim(0), in = x.dim(1), out = w.weight.dim(0);
  PMOL_CHECK(w.weight.dim(1) == in);
  Backend* be = x.backend();
  Tensor y = Tensor::Empty({n, out}, x.dtype(), be);
  if (w.bias.defined()) {
    be->GemmBias(x.dtype(), false, true, n, out, in, x.data(), in, w.weight.data(), in,
                 w.bias.data(), y.data());
  } else {
    be->Gemm(x.dtype(), false, true, n, out, in, 1.0, x.data(), in, w.weight.data(), in, 0.0,
             y.data(), out);
  }
  return y;
}

void LinearBackward(const Tensor& x, const Tensor& dy, const LinearWeights& w, Tensor& dx,
                    bool accumulate, LinearWeights* grads) {
  const int64_t n = x.dim(0), in = x.dim(1), out = w.weight.dim(0);
  Backend* be = x.backend();
  const DType dt = x.dtype();
  be->Gemm(dt, false, false, n, in, out, 1.0, dy.data(), out, w.weight.data(), in,
           accumulate ? 1.0 : 0.0, dx.data(), in);
  if (grads == nullptr) return;
  // The weight gradient is of dt or AccumDType(dt) (f32 master gradients of bf16 weights).
  be->GemmTo(dt, grads->weight.dtype(), true, false, out, in, n, 1.0, dy.data(), out, x.data(), in,
             1.0, grads->weight.data(), in);
  if (w.bias.defined()) be->SumRows(dt, dy.data(), n, out, grads->bias.data());
}

}  // namespace pmol
