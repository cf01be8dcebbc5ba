// HF config.json parsing: defaults and per-model-type semantics (biases of llama vs
// qwen2, head_dim, rope scaling), and errors for missing or inconsistent fields, each
// naming the file and the field.
#include <string>

#include "gtest/gtest.h"
#include "pmol/io/hf_config.h"

namespace pmol {
namespace {

std::string Error(const std::string& json) {
  auto c = ParseHfConfig(json, "cfg.json");
  return c.ok() ? "" : std::string(c.status().message());
}

constexpr char kBase[] = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 8)";

TEST(HfConfig, DefaultsAndModelTypes) {
  LlamaConfig c = ParseHfConfig(std::string("{") + kBase + "}", "cfg.json").value();
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);

  LlamaConfig q = ParseHfConfig(std::string(R"({"model_type": "qwen2", "num_key_value_heads": 2, )") + kBase + "}", "q").value();
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  LlamaConfig l = ParseHfConfig(std::string(R"({"attention_bias": true, "head_dim": 16, )") + kBase + "}", "l").value();
  EXPECT_TRUE(l.qkv_bias && l.o_bias);
  EXPECT_EQ(l.q_dim(), 128);
  LlamaConfig r = ParseHfConfig(std::string(R"({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, )") + kBase + "}", "r").value();
  EXPECT_EQ(r.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_DOUBLE_EQ(r.rope_scaling.factor, 8.0);
}

TEST(HfConfig, ErrorsNameTheField) {
  EXPECT_NE(Error("{").find("cfg.json"), std::string::npos);
  EXPECT_NE(Error(R"({"hidden_size": 64})").find("'vocab_size' is missing"), std::string::npos);
  EXPECT_NE(Error(std::string(R"({"num_key_value_heads": 3, )") + kBase + "}").find("'num_key_value_heads'"), std::string::npos);
  EXPECT_NE(Error(std::string(R"({"model_type": "gpt2", )") + kBase + "}").find("'model_type'"), std::string::npos);
  EXPECT_NE(Error(std::string(R"({"hidden_act": "gelu", )") + kBase + "}").find("'hidden_act'"), std::string::npos);
  EXPECT_NE(Error(std::string(R"({"rope_scaling": {"rope_type": "yarn", "factor": 2}, )") + kBase + "}").find("rope_scaling.rope_type"), std::string::npos);
  EXPECT_NE(Error(std::string(R"({"rope_scaling": {"rope_type": "llama3", "factor": 2}, )") + kBase + "}").find("rope_scaling.low_freq_factor"), std::string::npos);
  EXPECT_NE(Error(R"({"vocab_size": -5, "hidden_size": 64, "intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1})").find("'vocab_size' must be a positive integer"), std::string::npos);
  EXPECT_NE(Error(R"({"vocab_size": 5, "hidden_size": 60, "intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 8})").find("'num_attention_heads'"), std::string::npos);
  EXPECT_NE(Error(std::string(R"({"tie_word_embeddings": "yes", )") + kBase + "}").find("'tie_word_embeddings'"), std::string::npos);
}

}  // namespace
}  // namespace pmol
