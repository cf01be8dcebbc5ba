// HF config.json parsing and validation; see hf_config.h. Every error names the file
// and the field.
#include "pmol/io/hf_config.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"

namespace pmol {
namespace {

using Json = nlohmann::json;

class FieldReader {
 public:
  FieldReader(const Json& json, const std::string& source) : json_(json), source_(source) {}

  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": field '", field, "' ", what));
  }

  bool Has(const std::string& field) const {
    auto it = json_.find(field);
    return it != json_.end() && !it->is_null();
  }

  // Positive integer; `fallback` < 0 means the field is required.
  absl::Status PositiveInt(const std::string& field, int64_t fallback, int64_t* out) const {
    if (!Has(field)) {
      if (fallback < 0) return Error(field, "is missing");
      *out = fallback;
      return absl::OkStatus();
    }
    const Json& v = json_.at(field);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0) return Error(field, "must be a positive integer");
    *out = v.get<int64_t>();
    return absl::OkStatus();
  }

  absl::Status PositiveNumber(const std::string& field, double fallback, double* out) const {
    if (!Has(field)) {
      *out = fallback;
      return absl::OkStatus();
    }
    const Json& v = json_.at(field);
    if (!v.is_number() || v.get<double>() <= 0) return Error(field, "must be a positive number");
    *out = v.get<double>();
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& field, bool fallback, bool* out) const {
    if (!Has(field)) {
      *out = fallback;
      return absl::OkStatus();
    }
    const Json& v = json_.at(field);
    if (!v.is_boolean()) return Error(field, "must be true or false");
    *out = v.get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& field, const std::string& fallback, std::string* out) const {
    if (!Has(field)) {
      *out = fallback;
      return absl::OkStatus();
    }
    const Json& v = json_.at(field);
    if (!v.is_string()) return Error(field, "must be a string");
    *out = v.get<std::string>();
    return absl::OkStatus();
  }

 private:
  const Json& json_;
  const std::string& source_;
};

absl::Status ParseRopeScaling(const Json& json, const std::string& source, RopeScaling* rs) {
  auto it = json.find("rope_scaling");
  if (it == json.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": field 'rope_scaling' must be an object or null"));
  FieldReader r(*it, source);
  std::string type;
  PMOL_RETURN_IF_ERROR(r.String("rope_type", "", &type));
  if (type.empty()) PMOL_RETURN_IF_ERROR(r.String("type", "default", &type));
  if (type == "default") return absl::OkStatus();
  if (type != "linear" && type != "llama3")
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field 'rope_scaling.rope_type' is '", type,
        "'; pmol supports default, linear and llama3"));
  rs->type = type == "linear" ? RopeScaling::Type::kLinear : RopeScaling::Type::kLlama3;
  if (!r.Has("factor")) return absl::InvalidArgumentError(absl::StrCat(source, ": field 'rope_scaling.factor' is missing"));
  PMOL_RETURN_IF_ERROR(r.PositiveNumber("factor", 1.0, &rs->factor));
  if (rs->type == RopeScaling::Type::kLlama3) {
    for (const char* f : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
      if (!r.Has(f))
        return absl::InvalidArgumentError(absl::StrCat(source, ": field 'rope_scaling.", f, "' is missing"));
    }
    PMOL_RETURN_IF_ERROR(r.PositiveNumber("low_freq_factor", 1.0, &rs->low_freq_factor));
    PMOL_RETURN_IF_ERROR(r.PositiveNumber("high_freq_factor", 4.0, &rs->high_freq_factor));
    PMOL_RETURN_IF_ERROR(r.PositiveInt("original_max_position_embeddings", -1,
                                       &rs->original_max_position_embeddings));
    if (rs->high_freq_factor <= rs->low_freq_factor)
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": field 'rope_scaling.high_freq_factor' must exceed low_freq_factor"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LlamaConfig> ParseHfConfig(const std::string& json_text, const std::string& source) {
  Json json = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  FieldReader r(json, source);
  LlamaConfig c;
  c.json = json_text;
  PMOL_RETURN_IF_ERROR(r.String("model_type", "llama", &c.model_type));
  if (c.model_type != "llama" && c.model_type != "qwen2" && c.model_type != "mistral")
    return r.Error("model_type", absl::StrCat("is '", c.model_type,
                                              "'; pmol runs llama, qwen2 and mistral"));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("vocab_size", -1, &c.vocab_size));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("hidden_size", -1, &c.hidden_size));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("intermediate_size", -1, &c.intermediate_size));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("num_hidden_layers", -1, &c.num_hidden_layers));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("num_attention_heads", -1, &c.num_attention_heads));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("num_key_value_heads", c.num_attention_heads, &c.num_key_value_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return r.Error("num_key_value_heads", absl::StrCat("(", c.num_key_value_heads,
                                                       ") must divide num_attention_heads (",
                                                       c.num_attention_heads, ")"));
  if (!r.Has("head_dim") && c.hidden_size % c.num_attention_heads != 0)
    return r.Error("num_attention_heads", absl::StrCat("(", c.num_attention_heads,
                                                       ") must divide hidden_size (", c.hidden_size,
                                                       ") when head_dim is not given"));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("head_dim", c.hidden_size / c.num_attention_heads, &c.head_dim));
  if (c.head_dim % 2 != 0) return r.Error("head_dim", absl::StrCat("(", c.head_dim, ") must be even for RoPE"));
  PMOL_RETURN_IF_ERROR(r.PositiveInt("max_position_embeddings", 2048, &c.max_position_embeddings));
  PMOL_RETURN_IF_ERROR(r.PositiveNumber("rms_norm_eps", 1e-6, &c.rms_norm_eps));
  PMOL_RETURN_IF_ERROR(r.PositiveNumber("rope_theta", 10000.0, &c.rope_theta));
  PMOL_RETURN_IF_ERROR(ParseRopeScaling(json, source, &c.rope_scaling));
  PMOL_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", false, &c.tie_word_embeddings));
  std::string act;
  PMOL_RETURN_IF_ERROR(r.String("hidden_act", "silu", &act));
  if (act != "silu") return r.Error("hidden_act", absl::StrCat("is '", act, "'; Llama-family models use silu"));
  if (c.model_type == "qwen2") {
    c.qkv_bias = true;
    bool use_sliding = false;
    PMOL_RETURN_IF_ERROR(r.Bool("use_sliding_window", false, &use_sliding));
    if (use_sliding) PMOL_RETURN_IF_ERROR(r.PositiveInt("sliding_window", 4096, &c.sliding_window));
  } else {
    bool attention_bias = false;
    PMOL_RETURN_IF_ERROR(r.Bool("attention_bias", false, &attention_bias));
    c.qkv_bias = c.o_bias = attention_bias;
    PMOL_RETURN_IF_ERROR(r.Bool("mlp_bias", false, &c.mlp_bias));
    if (c.model_type == "mistral") PMOL_RETURN_IF_ERROR(r.PositiveInt("sliding_window", 0, &c.sliding_window));
  }
  PMOL_RETURN_IF_ERROR(r.String("torch_dtype", "", &c.torch_dtype));
  return c;
}

absl::StatusOr<LlamaConfig> ReadHfConfig(const std::string& path) {
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ParseHfConfig(text, path);
}

}  // namespace pmol
