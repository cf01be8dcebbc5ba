// LlamaModel's GradientsFinal reports during a backward (what lets the gradient reduction
// overlap the backward): the order is num_layers, num_layers-1, ..., 0, -1, and when a
// layer is reported, the gradient of every weight that GradientsFinalLayer assigns to it
// already equals its value at the end of the backward (compared exactly: nothing may be
// added later), with and without activation recompute. So that the comparison cannot
// pass by itself, the lowest block's gradients are checked to be still zero when the
// head is reported. Also the name mapping, adapters' names included.
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/io/hf_config.h"
#include "pmol/model/llama_model.h"

namespace pmol {
namespace {

Backend* Cpu() { return GetBackend(DeviceType::kCpu, 2).value(); }

void Check(bool recompute) {
  const LlamaConfig config = ParseHfConfig(
      R"({"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
      "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3,
      "vocab_size": 40, "rms_norm_eps": 1e-6, "tie_word_embeddings": false})",
      "config.json").value();
  LlamaModel model(config, InitLlamaWeights(config, 3, 0.2, Cpu(), DType::kF64), Cpu(), DType::kF64);
  model.set_recompute_activations(recompute);
  const int64_t batch = 2, seq = 5, layers = config.num_hidden_layers;
  const std::vector<int32_t> ids = {1, 5, 9, 2, 33, 7, 0, 12, 3, 39};
  ForwardState state;
  const Tensor logits = model.Forward(ids, batch, seq, &state).value();
  std::vector<double> d(logits.numel());
  for (size_t i = 0; i < d.size(); ++i) d[i] = std::sin(0.3 * i + 0.1);
  LlamaWeights grads = ZerosLikeWeights(config, Cpu(), DType::kF64);
  const auto named = NamedWeights(config, grads);

  std::vector<int64_t> reported;
  std::map<std::string, std::vector<double>> at_report;
  bool lowest_block_zero_at_head = false;
  model.Backward(state, Tensor::FromHost(d.data(), logits.shape(), DType::kF64, Cpu()), &grads,
                 [&](int64_t layer) {
                   reported.push_back(layer);
                   for (const auto& [name, g] : named) {
                     if (GradientsFinalLayer(name, layers) != layer) continue;
                     EXPECT_EQ(at_report.count(name), 0u) << name << " reported twice";
                     at_report[name] = g.ToDoubles();
                   }
                   if (layer == layers) {
                     lowest_block_zero_at_head = true;
                     for (const double x : grads.layers[0].q.weight.ToDoubles()) lowest_block_zero_at_head &= x == 0;
                   }
                 });
  EXPECT_EQ(reported, (std::vector<int64_t>{3, 2, 1, 0, -1}));
  EXPECT_TRUE(lowest_block_zero_at_head) << "block 0's gradient was already written when the head was reported";
  for (const auto& [name, g] : named) {
    ASSERT_EQ(at_report.count(name), 1u) << name << " never reported";
    const std::vector<double> final_grad = g.ToDoubles();
    double norm = 0;
    for (double x : final_grad) norm += x * x;
    EXPECT_GT(norm, 0) << name;
    EXPECT_EQ(at_report[name], final_grad) << name << " changed after its layer was reported final";
  }
}

TEST(GradientsFinalTest, EachLayerIsFinalWhenReported) { Check(false); }
TEST(GradientsFinalTest, EachLayerIsFinalWhenReportedWithRecompute) { Check(true); }

TEST(GradientsFinalTest, NamesMapToTheirLayer) {
  EXPECT_EQ(GradientsFinalLayer("model.embed_tokens.weight", 4), -1);
  EXPECT_EQ(GradientsFinalLayer("model.layers.0.self_attn.q_proj.weight", 4), 0);
  EXPECT_EQ(GradientsFinalLayer("model.layers.3.mlp.down_proj.pmol.lora_B", 4), 3);
  EXPECT_EQ(GradientsFinalLayer("model.layers.2.self_attn.o_proj.pmol.router", 4), 2);
  EXPECT_EQ(GradientsFinalLayer("base_model.model.model.layers.1.mlp.up_proj.lora_A.weight", 4), 1);
  EXPECT_EQ(GradientsFinalLayer("model.norm.weight", 4), 4);
  EXPECT_EQ(GradientsFinalLayer("lm_head.weight", 4), 4);
  EXPECT_EQ(GradientsFinalLayer("score.weight", 4), 4);
  EXPECT_EQ(GradientsFinalLayer("model.layers.4.mlp.up_proj.weight", 4), 4);  // no such block
  EXPECT_EQ(GradientsFinalLayer("model.layers.x.mlp", 4), 4);
  EXPECT_EQ(GradientsFinalLayer("model.mylayers.1.w", 4), 4);
}

}  // namespace
}  // namespace pmol
