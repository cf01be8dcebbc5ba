// One Llama decoder block, forward and backward, on the residual stream x [N = B*T, H]:
//   h1 = RMSNorm(x; w_in)
//   q, k, v = h1 Wq^T (+bq), h1 Wk^T (+bk), h1 Wv^T (+bv);  q, k = RoPE(q), RoPE(k)
//   a  = CausalGQA(q, k, v);  x2 = x + a Wo^T (+bo)
//   h2 = RMSNorm(x2; w_post)
//   m  = (silu(h2 Wg^T) * (h2 Wu^T)) Wd^T;  y = x2 + m
// Each of the seven linear modules may carry an adapter (linear_adapter.h) that adds to
// its output. The backward walks the same steps in reverse from dy to dx, and adds weight
// gradients when asked. Activations are those the backward reads; with recompute, only x is kept
// and the rest is rebuilt from it just before the block's backward.
#ifndef PMOL_MODEL_DECODER_BLOCK_H_
#define PMOL_MODEL_DECODER_BLOCK_H_

#include "pmol/core/tensor.h"
#include "pmol/io/hf_config.h"
#include "pmol/model/linear_adapter.h"
#include "pmol/model/llama_weights.h"
#include "pmol/model/rope_table.h"

namespace pmol {

struct BlockInput {
  int64_t batch = 0;
  int64_t seq = 0;
  const Tensor* positions = nullptr;  // i32 [N]
  const RopeTable* rope = nullptr;
  // Adapters on the block's linear modules (none when null), and this block's index.
  LinearAdapters* adapters = nullptr;
  int64_t layer = 0;
  const Tensor* key_holes = nullptr;  // i32 [N, 2] or null (llama_model.h TokenLayout)
};

struct BlockActivations {
  Tensor x;                    // block input [N, H]
  Tensor inv_rms1, h1;         // [N], [N, H]
  Tensor q, k, v;              // after RoPE: [N, Hq*D], [N, Hkv*D], [N, Hkv*D]
  Tensor attn, lse;            // [N, Hq*D], [B, Hq, T]
  Tensor x2, inv_rms2, h2;     // [N, H], [N], [N, H]
  Tensor gate, up, act;        // [N, I]

  void ReleaseAllButInput();
};

// Runs the block on acts->x and fills every activation; returns y.
// The residual add that ends a block can be left to the next RMSNorm's pass (the fused
// "add + norm", which reads both terms and writes the sum once, instead of an add that
// reads two tensors and writes one before the norm reads it again):
//   skip != null:     y is returned unsummed, as its two terms: the MLP's output m (the
//                     return value) and *skip = x2, with y = m + *skip;
//   residual != null: the block's input is acts->x + *residual (the previous block's two
//                     terms), summed into acts->x by the input norm, so that acts->x holds
//                     the block input afterwards, as without it.
// The values are bit for bit those of the unfused add (kernels/backend.h: RmsNorm with a
// residual stores the rounded sum and normalizes it).
Tensor DecoderBlockForward(const LlamaConfig& config, const LayerWeights& w, const BlockInput& in,
                           BlockActivations* acts, const Tensor* residual = nullptr,
                           Tensor* skip = nullptr);

// From dy (grad of y) returns dx; adds weight gradients into grads when not null.
Tensor DecoderBlockBackward(const LlamaConfig& config, const LayerWeights& w, const BlockInput& in,
                            const BlockActivations& acts, const Tensor& dy, LayerWeights* grads);

}  // namespace pmol

#endif  // PMOL_MODEL_DECODER_BLOCK_H_
