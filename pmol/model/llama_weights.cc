// Weight naming, loading, init; see llama_weights.h.
#include "pmol/model/llama_weights.h"

#include "absl/strings/str_cat.h"
#include "pmol/core/rng.h"
#include "pmol/core/status.h"

namespace pmol {

void ForEachWeight(const LlamaConfig& c, LlamaWeights& w,
                   const std::function<void(const WeightSlot&)>& fn) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), KV = c.kv_dim();
  fn({"model.embed_tokens.weight", {c.vocab_size, H}, WeightKind::kEmbedding, &w.embed});
  w.layers.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto linear = [&](const std::string& name, LinearWeights& lw, int64_t out, int64_t in,
                      bool bias) {
      fn({p + name + ".weight", {out, in}, WeightKind::kMatrix, &lw.weight});
      if (bias) fn({p + name + ".bias", {out}, WeightKind::kBias, &lw.bias});
    };
    fn({p + "input_layernorm.weight", {H}, WeightKind::kNorm, &l.input_norm});
    linear("self_attn.q_proj", l.q, Q, H, c.qkv_bias);
    linear("self_attn.k_proj", l.k, KV, H, c.qkv_bias);
    linear("self_attn.v_proj", l.v, KV, H, c.qkv_bias);
    linear("self_attn.o_proj", l.o, H, Q, c.o_bias);
    fn({p + "post_attention_layernorm.weight", {H}, WeightKind::kNorm, &l.post_norm});
    linear("mlp.gate_proj", l.gate, I, H, c.mlp_bias);
    linear("mlp.up_proj", l.up, I, H, c.mlp_bias);
    linear("mlp.down_proj", l.down, H, I, c.mlp_bias);
  }
  fn({"model.norm.weight", {H}, WeightKind::kNorm, &w.final_norm});
  if (!c.tie_word_embeddings) fn({"lm_head.weight", {c.vocab_size, H}, WeightKind::kMatrix, &w.lm_head});
}

absl::StatusOr<LlamaWeights> LoadLlamaWeights(const LlamaConfig& config, const WeightFiles& files,
                                              Backend* backend, DType dtype) {
  LlamaWeights w;
  absl::Status status;
  ForEachWeight(config, w, [&](const WeightSlot& slot) {
    if (!status.ok()) return;
    const SafetensorsFile* file = files.FileOf(slot.name);
    if (file == nullptr) {
      status = absl::InvalidArgumentError(absl::StrCat(
          files.description(), ": tensor '", slot.name, "' is missing (the config asks for it",
          slot.kind == WeightKind::kBias ? "; check attention_bias / mlp_bias" : "",
          slot.name == "lm_head.weight" ? "; set tie_word_embeddings if the head is tied" : "",
          ")"));
      return;
    }
    const SafetensorsEntry* e = file->Find(slot.name);
    if (e->shape != slot.shape) {
      status = absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": tensor '", slot.name, "' has shape ", ShapeString(e->shape),
          " but config.json implies ", ShapeString(slot.shape)));
      return;
    }
    absl::StatusOr<Tensor> t = file->Load(slot.name, backend, dtype);
    if (!t.ok()) {
      status = t.status();
      return;
    }
    *slot.tensor = std::move(t).value();
  });
  PMOL_RETURN_IF_ERROR(status);
  return w;
}

LlamaWeights InitLlamaWeights(const LlamaConfig& config, uint64_t seed, double stddev,
                              Backend* backend, DType dtype) {
  LlamaWeights w;
  ForEachWeight(config, w, [&](const WeightSlot& slot) {
    const int64_t n = NumElements(slot.shape);
    std::vector<double> values(n, 0.0);
    if (slot.kind == WeightKind::kNorm) {
      std::fill(values.begin(), values.end(), 1.0);
    } else if (slot.kind != WeightKind::kBias) {
      Rng rng = Rng::ForStream(seed, slot.name);
      for (double& v : values) v = stddev * rng.Normal();
    }
    Tensor host = Tensor::FromHost(values.data(), slot.shape, DType::kF64, backend);
    *slot.tensor = host.ConvertTo(dtype);
  });
  return w;
}

LlamaWeights ZerosLikeWeights(const LlamaConfig& config, Backend* backend, DType dtype) {
  LlamaWeights w;
  ForEachWeight(config, w, [&](const WeightSlot& slot) {
    *slot.tensor = Tensor::Zeros(slot.shape, dtype, backend);
  });
  return w;
}

LlamaWeights CloneWeights(const LlamaConfig& config, LlamaWeights& weights) {
  std::vector<std::pair<std::string, Tensor>> src = NamedWeights(config, weights);
  LlamaWeights copy;
  size_t i = 0;
  ForEachWeight(config, copy, [&](const WeightSlot& slot) { *slot.tensor = src[i++].second.Clone(); });
  return copy;
}

std::vector<std::pair<std::string, Tensor>> NamedWeights(const LlamaConfig& config,
                                                         LlamaWeights& weights) {
  std::vector<std::pair<std::string, Tensor>> out;
  ForEachWeight(config, weights, [&](const WeightSlot& slot) { out.push_back({slot.name, *slot.tensor}); });
  return out;
}

}  // namespace pmol
