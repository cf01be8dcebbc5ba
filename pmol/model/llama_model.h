// A Llama-family decoder (Llama 2/3, Qwen2/2.5, Mistral) over token ids [B, T]:
//   x0 = embed[ids];  x_{l+1} = Block_l(x_l);  logits = RMSNorm(x_L; w_norm) W_head^T
// with W_head = embed when tie_word_embeddings. Forward keeps what the backward needs in
// a ForwardState; adapters (linear_adapter.h) may join any linear module of the blocks.
// Backward(dlogits) returns dx0, the gradient at the embedding output
// (what adapters and input-gradient users need), and adds weight gradients when given a
// gradient holder (what full fine-tuning needs). With activation recompute, the state
// holds only each block's input and the backward rebuilds the rest block by block.
#ifndef PMOL_MODEL_LLAMA_MODEL_H_
#define PMOL_MODEL_LLAMA_MODEL_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/core/tensor.h"
#include "pmol/io/hf_config.h"
#include "pmol/model/decoder_block.h"
#include "pmol/model/linear_adapter.h"
#include "pmol/model/llama_weights.h"
#include "pmol/model/rope_table.h"

namespace pmol {

// How the tokens of a [batch, seq] id array are laid out when it is not one sequence per
// row (position t % seq, plain causal attention): per token its RoPE position, and the
// keys it must not attend to (Backend attention's key holes). Several sequences sharing
// a prefix fit in one row this way: [prefix | reply A | reply B] with reply B's positions
// continuing the prefix and reply A a hole for reply B's tokens.
struct TokenLayout {
  std::vector<int32_t> positions;  // [N], each in [0, seq)
  std::vector<int32_t> key_holes;  // [N, 2]: row-local [begin, end) (begin >= end: none)
};

struct ForwardState {
  int64_t batch = 0, seq = 0;
  LinearAdapters* adapters = nullptr;  // those the forward ran with; the backward reuses them
  Tensor ids;        // i32 [N] on the device
  Tensor positions;  // i32 [N]
  Tensor key_holes;  // i32 [N, 2], or undefined (plain causal attention)
  std::vector<BlockActivations> blocks;
  Tensor final_in, final_inv_rms, final_out;  // [N, H], [N], [N, H]
};

// Told during a backward which parameter gradients have become final, so that their
// reduction can start while the backward goes on: layer = num_hidden_layers once the
// final norm is done (everything above the blocks: final norm, LM head, a value head),
// layer = l after block l (its weights and its adapters), layer = -1 after the embedding.
using GradientsFinal = std::function<void(int64_t layer)>;
// The GradientsFinal layer after which the gradient of the trainable tensor `name` (HF
// names; adapters' names extend their module's) is final: l for "model.layers.l.*", -1
// for "model.embed_tokens.weight" (a tied head too), num_layers for anything else.
int64_t GradientsFinalLayer(const std::string& name, int64_t num_layers);

class LlamaModel {
 public:
  LlamaModel(LlamaConfig config, LlamaWeights weights, Backend* backend, DType dtype);

  // Reads `dir`/config.json and the weights (single file or sharded), computing in dtype.
  static absl::StatusOr<LlamaModel> Load(const std::string& dir, Backend* backend, DType dtype);

  const LlamaConfig& config() const { return config_; }
  LlamaWeights& weights() { return weights_; }
  Backend* backend() const { return backend_; }
  DType dtype() const { return dtype_; }
  void set_recompute_activations(bool on) { recompute_ = on; }

  // ids: row-major [batch, seq]. Returns logits [batch, seq, vocab]. With state == nullptr
  // nothing is kept for a backward. Ids out of range are an error naming row and column.
  // `adapters` (may be null: the frozen base) join the blocks' linear modules.
  absl::StatusOr<Tensor> Forward(const std::vector<int32_t>& ids, int64_t batch, int64_t seq,
                                 ForwardState* state, LinearAdapters* adapters = nullptr);

  // The same up to the final norm: returns the hidden states [batch*seq, H] that the LM
  // head (or a value head) reads; no vocabulary GEMM. `layout` (may be null: one sequence
  // per row) places the tokens; a malformed one is an error naming the token.
  absl::StatusOr<Tensor> ForwardHidden(const std::vector<int32_t>& ids, int64_t batch,
                                       int64_t seq, ForwardState* state,
                                       LinearAdapters* adapters = nullptr,
                                       const TokenLayout* layout = nullptr);

  // dlogits [batch, seq, vocab]. Returns the gradient at the embedding output [N, H];
  // adds weight gradients into `grads` (shaped by ZerosLikeWeights; of the model's dtype or
  // its AccumDType: f32 gradients of a bf16 model) when not null.
  // `on_final` (may be empty) hears about gradients as they become final.
  Tensor Backward(ForwardState& state, const Tensor& dlogits, LlamaWeights* grads,
                  const GradientsFinal& on_final = {});

  // From the gradient at the final hidden states [N, H] (what ForwardHidden returned).
  Tensor BackwardFromHidden(ForwardState& state, const Tensor& dhidden, LlamaWeights* grads,
                            const GradientsFinal& on_final = {});

  // The LM head at selected positions only: logits [M, vocab] = hidden[positions] W_head^T,
  // for hidden [N, H] from ForwardHidden and `positions` an i32 [M] tensor of row indices
  // on this model's backend (a row may be selected more than once: a shared prompt's last
  // token predicts the first token of each reply). Objectives that score response tokens need no
  // logits at prompt and padding positions, so their vocabulary GEMM is skipped. The logits
  // are of AccumDType (f32 for a bf16 model: the loss is computed in f32).
  Tensor HeadAt(const Tensor& hidden, const Tensor& positions) const;
  // Its backward: the gradient at the hidden states [N, H] (zero at unselected rows) from
  // dlogits [M, vocab] (AccumDType; a bf16 model rounds them to bf16 for its GEMMs), and
  // the head's weight gradient into `grads` (lm_head, or embed when tied) when not null.
  Tensor HeadAtBackward(const Tensor& hidden, const Tensor& positions, const Tensor& dlogits,
                        LlamaWeights* grads) const;

  // The LM head's weight [vocab, H]: lm_head, or embed when tied.
  const Tensor& Head() const {
    return config_.tie_word_embeddings ? weights_.embed : weights_.lm_head;
  }

 private:
  BlockInput MakeBlockInput(const ForwardState& state, int64_t layer);

  LlamaConfig config_;
  LlamaWeights weights_;
  Backend* backend_;
  DType dtype_;
  RopeTable rope_;
  bool recompute_ = false;
};

}  // namespace pmol

#endif  // PMOL_MODEL_LLAMA_MODEL_H_
