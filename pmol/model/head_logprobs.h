// Token log-probs from the LM head at selected positions without a full-vocabulary
// tensor: the rows go through the head a chunk at a time, and only one chunk's logits
// [rows, vocab] exist at once.
//
// Math. For hidden states h [N, H], selected rows s_i = positions[i] (i < M; a row may be
// selected more than once), targets t_i, and the head W [V, H]:
//   z_i     = h[s_i] W^T                              (the logits, [V])
//   logp_i  = z_i[t_i] - logsumexp(z_i)               (0 where t_i < 0)
// Backward, with the head frozen (W gets no gradient, as in LoRA/PMoL training): logp_i
// depends on h only through h[s_i], with gradient
//   basis_i = d logp_i / d h[s_i] = (onehot(t_i) - softmax(z_i)) W   ([H]; 0 where t_i < 0)
// which the forward computes from the chunk's logits while it has them. Any loss of the
// log-probs then backpropagates by a row scaling and a scatter:
//   dh[s] = sum over i with s_i = s of dL/dlogp_i * basis_i
// so the backward neither keeps nor recomputes logits. The FLOPs equal those of keeping
// the logits (the basis GEMM is the backward's dlogits W, moved into the forward); the
// memory is one chunk of logits and [M, H] instead of two [M, V] tensors.
// A head that is trained (full fine-tuning) needs the logits' gradient for dW and keeps
// using LlamaModel::HeadAt / HeadAtBackward.
// Mixed precision (bf16 hidden states and head): the logits come out of the GEMM in f32,
// the log-softmax and logp run in f32 (the loss is computed in f32 and then on the host in
// f64); the chunk's onehot - softmax is rounded to bf16 once for the basis GEMM, whose
// result (the basis) is f32. The backward's row scaling runs in f32 and rounds dh[s] once.
#ifndef PMOL_MODEL_HEAD_LOGPROBS_H_
#define PMOL_MODEL_HEAD_LOGPROBS_H_

#include <cstdint>

#include "pmol/core/tensor.h"

namespace pmol {

struct HeadLogProbs {
  Tensor logp;   // [M], AccumDType of the hidden states' dtype
  Tensor basis;  // [M, H] of that type too, or undefined (forward without backward)
};

// Rows per chunk: as many as `chunk_bytes` of logits hold (at least 1). chunk_bytes <= 0
// takes the device's default: 8 MiB on the CPU, 1 GiB on CUDA, but never fewer than 256
// rows, below which the GEMM rereads (and OpenBLAS repacks) the whole head too often for
// too little work. On the CPU benchmark (vocabulary 16000) budgets from 8 to 256 MiB ran
// at the same speed; 8 MiB held 90 MB less than 256 MiB.
int64_t HeadChunkRows(const Tensor& hidden, int64_t vocab, int64_t chunk_bytes = 0);

// hidden [N, H]; head [V, H] (same dtype and backend); positions and targets i32 [M] on
// the backend (positions in [0, N), targets in [0, V) or < 0). `with_basis` keeps the
// basis for HeadLogProbsBackward. chunk_bytes as for HeadChunkRows.
HeadLogProbs HeadLogProbsAt(const Tensor& head, const Tensor& hidden, const Tensor& positions,
                            const Tensor& targets, bool with_basis, int64_t chunk_bytes = 0);

// dh [N, H] (zero at rows no position selects) from dlogp [M] (hidden's dtype and
// backend) and the forward's basis.
Tensor HeadLogProbsBackward(const HeadLogProbs& forward, const Tensor& hidden,
                            const Tensor& positions, const Tensor& dlogp);

}  // namespace pmol

#endif  // PMOL_MODEL_HEAD_LOGPROBS_H_
