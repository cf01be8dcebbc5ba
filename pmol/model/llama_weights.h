// The weights of a Llama-family decoder, under the tensor names of HF checkpoints:
//   model.embed_tokens.weight [V,H]
//   model.layers.{i}.input_layernorm.weight [H]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight [out,in] (+ .bias when configured)
//   model.layers.{i}.post_attention_layernorm.weight [H]
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight [out,in] (+ .bias when mlp_bias)
//   model.norm.weight [H]
//   lm_head.weight [V,H] (absent when tie_word_embeddings: the embedding is reused)
// A linear layer computes y = x W^T + b. ForEachWeight is the one list of these names and
// shapes; loading, initialising, saving and gradients all walk it.
#ifndef PMOL_MODEL_LLAMA_WEIGHTS_H_
#define PMOL_MODEL_LLAMA_WEIGHTS_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/core/tensor.h"
#include "pmol/io/hf_config.h"
#include "pmol/io/weight_files.h"

namespace pmol {

struct LinearWeights {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
};

struct LayerWeights {
  Tensor input_norm;
  LinearWeights q, k, v, o;
  Tensor post_norm;
  LinearWeights gate, up, down;
};

struct LlamaWeights {
  Tensor embed;
  std::vector<LayerWeights> layers;
  Tensor final_norm;
  Tensor lm_head;  // undefined when tied to embed
};

enum class WeightKind { kMatrix, kNorm, kBias, kEmbedding };

struct WeightSlot {
  std::string name;
  Shape shape;
  WeightKind kind;
  Tensor* tensor;
};

// Visits every weight of `config` in checkpoint order, with the slot it lives in.
void ForEachWeight(const LlamaConfig& config, LlamaWeights& weights,
                   const std::function<void(const WeightSlot&)>& fn);

// Loads and checks every weight (presence, shape) from a model folder, converting to
// `dtype` on `backend`. Errors name the file and the tensor.
absl::StatusOr<LlamaWeights> LoadLlamaWeights(const LlamaConfig& config, const WeightFiles& files,
                                              Backend* backend, DType dtype);

// Random init as HF does it: matrices and embeddings N(0, std^2), norms 1, biases 0.
// Deterministic for the seed: each tensor draws from its own stream named after it.
LlamaWeights InitLlamaWeights(const LlamaConfig& config, uint64_t seed, double stddev,
                              Backend* backend, DType dtype);

// Zero tensors shaped like every weight (for gradients).
LlamaWeights ZerosLikeWeights(const LlamaConfig& config, Backend* backend, DType dtype);

// A deep copy (e.g. a frozen reference, or weights to merge an adapter into).
LlamaWeights CloneWeights(const LlamaConfig& config, LlamaWeights& weights);

// Names and tensors, for writing a checkpoint.
std::vector<std::pair<std::string, Tensor>> NamedWeights(const LlamaConfig& config,
                                                         LlamaWeights& weights);

}  // namespace pmol

#endif  // PMOL_MODEL_LLAMA_WEIGHTS_H_
