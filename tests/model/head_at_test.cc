// LlamaModel::HeadAt / HeadAtBackward against the full LM head (f64, tied and untied heads):
// the logits at the selected positions equal the rows of Forward's logits, and for a
// dlogits that is zero outside those positions the backward gives Backward's input
// gradient and every weight gradient (the head's included). Exact up to summation order,
// so 1e-12; the dlogits are nonzero, so the comparison is not empty.
#include <random>

#include "gtest/gtest.h"
#include "pmol/io/hf_config.h"
#include "pmol/model/llama_model.h"
#include "tests/model/model_test_util.h"

namespace pmol {
namespace {

Backend* Cpu() { return GetBackend(DeviceType::kCpu, 2).value(); }

void Check(bool tied) {
  const LlamaConfig config = ParseHfConfig(
      std::string(R"({"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
      "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
      "vocab_size": 40, "rms_norm_eps": 1e-6, "tie_word_embeddings": )") +
          (tied ? "true" : "false") + "}",
      "config.json").value();
  LlamaModel model(config, InitLlamaWeights(config, 3, 0.2, Cpu(), DType::kF64), Cpu(), DType::kF64);
  const int64_t batch = 2, seq = 6, n = batch * seq, v = config.vocab_size;
  const std::vector<int32_t> ids = {1, 5, 9, 2, 33, 7, 0, 12, 3, 39, 8, 4};
  const std::vector<int32_t> positions = {2, 3, 4, 8, 9};

  ForwardState full_state;
  const std::vector<double> logits = model.Forward(ids, batch, seq, &full_state)->ToDoubles();
  ForwardState state;
  Tensor hidden = model.ForwardHidden(ids, batch, seq, &state).value();
  const Tensor index = Tensor::FromHost(positions.data(), {5}, DType::kI32, Cpu());
  const std::vector<double> selected = model.HeadAt(hidden, index).ToDoubles();
  std::vector<double> want;
  for (int32_t p : positions) want.insert(want.end(), logits.begin() + p * v, logits.begin() + (p + 1) * v);
  ExpectClose(selected, want, 1e-12, "HeadAt logits");

  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> dsel(positions.size() * v), dfull(n * v, 0.0);
  for (size_t i = 0; i < positions.size(); ++i)
    for (int64_t k = 0; k < v; ++k) dfull[positions[i] * v + k] = dsel[i * v + k] = normal(rng);
  LlamaWeights g_full = ZerosLikeWeights(config, Cpu(), DType::kF64);
  LlamaWeights g_sel = ZerosLikeWeights(config, Cpu(), DType::kF64);
  const std::vector<double> dx_full =
      model.Backward(full_state, Tensor::FromHost(dfull.data(), {batch, seq, v}, DType::kF64, Cpu()), &g_full)
          .ToDoubles();
  const Tensor dhidden = model.HeadAtBackward(
      hidden, index, Tensor::FromHost(dsel.data(), {5, v}, DType::kF64, Cpu()), &g_sel);
  const std::vector<double> dx_sel = model.BackwardFromHidden(state, dhidden, &g_sel).ToDoubles();
  ExpectClose(dx_sel, dx_full, 1e-12, "input gradient");
  auto a = NamedWeights(config, g_full), b = NamedWeights(config, g_sel);
  for (size_t i = 0; i < a.size(); ++i) ExpectClose(b[i].second.ToDoubles(), a[i].second.ToDoubles(), 1e-12, a[i].first);
}

TEST(HeadAtTest, MatchesTheFullHeadUntied) { Check(false); }
TEST(HeadAtTest, MatchesTheFullHeadTied) { Check(true); }

}  // namespace
}  // namespace pmol
