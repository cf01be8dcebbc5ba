// Hugging Face `config.json` of Llama-family decoders (model_type llama, qwen2, mistral),
// parsed into the fields pmol's model needs, with HF's defaults where a field may be
// absent. Biases follow the HF modeling code: llama `attention_bias` puts a bias on
// q, k, v and o; qwen2 always has q/k/v biases and none on o; `mlp_bias` (llama) on
// gate/up/down. RoPE scaling: none/"default", "linear" (inv_freq / factor) and "llama3"
// (wavelength-dependent interpolation between inv_freq and inv_freq / factor).
#ifndef PMOL_IO_HF_CONFIG_H_
#define PMOL_IO_HF_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace pmol {

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  int64_t sliding_window = 0;  // 0: none
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  std::string torch_dtype;
  std::string json;  // the file's text, written back unchanged by init-model

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// `source` names the file in error messages.
absl::StatusOr<LlamaConfig> ParseHfConfig(const std::string& json_text, const std::string& source);
absl::StatusOr<LlamaConfig> ReadHfConfig(const std::string& path);

}  // namespace pmol

#endif  // PMOL_IO_HF_CONFIG_H_
