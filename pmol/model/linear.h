// Dense linear layer on row-major activations, as HF's nn.Linear: y = x W^T + b with
// x [N, in], W [out, in]. Backward: dx (+)= dy W;  dW += dy^T x;  db += sum_rows dy.
#ifndef PMOL_MODEL_LINEAR_H_
#define PMOL_MODEL_LINEAR_H_

#include "pmol/core/tensor.h"
#include "pmol/model/llama_weights.h"

namespace pmol {

// Returns y [N, out].
Tensor LinearForward(const Tensor& x, const LinearWeights& w);

// dx: overwritten when accumulate is false, added to otherwise. grads may be null (frozen
// weights: input-gradient only).
void LinearBackward(const Tensor& x, const Tensor& dy, const LinearWeights& w, Tensor& dx,
                    bool accumulate, LinearWeights* grads);

}  // namespace pmol

#endif  // PMOL_MODEL_LINEAR_H_
