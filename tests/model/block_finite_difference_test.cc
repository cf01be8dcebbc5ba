// Decoder-block and whole-model backward against central finite differences in double
// precision. Loss = sum(out * R) for a fixed random R; the analytic gradient of the input
// and of sampled elements of every weight (norms, q/k/v/o with biases, gate/up/down,
// embedding, final norm, head) must match (L(w+h) - L(w-h)) / 2h with h = 1e-5.
// Tolerance |analytic - numeric| <= 1e-6 * (1 + |numeric|): the truncation error is
// O(h^2 * f''') ~ 1e-10 and the rounding error ~ eps * |L| / h ~ 1e-16 * 1e2 / 1e-5 = 1e-9,
// so 1e-6 has three orders of headroom, while a wrong term in a backward is O(1e-2) or more.
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/core/rng.h"
#include "pmol/model/decoder_block.h"
#include "pmol/model/llama_model.h"
#include "pmol/model/rope_table.h"

namespace pmol {
namespace {

constexpr double kStep = 1e-5;
constexpr double kTol = 1e-6;

LlamaConfig TestConfig() {
  return ParseHfConfig(R"({"model_type": "llama", "vocab_size": 23, "hidden_size": 24,
      "intermediate_size": 30, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": 2, "attention_bias": true, "mlp_bias": true,
      "rms_norm_eps": 1e-5, "rope_theta": 100.0})", "test").value();
}

Backend* Cpu() { return GetBackend(DeviceType::kCpu).value(); }

// Random f64 weights with non-trivial norms and biases.
LlamaWeights RandomWeights(const LlamaConfig& c, uint64_t seed) {
  LlamaWeights w = InitLlamaWeights(c, seed, 0.3, Cpu(), DType::kF64);
  Rng rng(seed + 100);
  ForEachWeight(c, w, [&](const WeightSlot& s) {
    double* p = s.tensor->data_as<double>();
    for (int64_t i = 0; i < s.tensor->numel(); ++i) {
      if (s.kind == WeightKind::kNorm) p[i] = 1.0 + 0.2 * rng.Normal();
      if (s.kind == WeightKind::kBias) p[i] = 0.1 * rng.Normal();
    }
  });
  return w;
}

Tensor RandomTensor(const Shape& shape, Rng& rng) {
  std::vector<double> v(NumElements(shape));
  for (double& x : v) x = rng.Normal();
  return Tensor::FromHost(v.data(), shape, DType::kF64, Cpu());
}

double Dot(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.ToDoubles(), y = b.ToDoubles();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

// Checks d loss / d t[i] for a spread of indices i.
template <typename LossFn>
void CheckElements(Tensor& t, const std::vector<double>& analytic, LossFn loss,
                   const std::string& what) {
  double* p = t.data_as<double>();
  const int64_t n = t.numel();
  const int64_t stride = std::max<int64_t>(1, n / 7);
  for (int64_t i = 0; i < n; i += stride) {
    const double saved = p[i];
    p[i] = saved + kStep;
    const double up = loss();
    p[i] = saved - kStep;
    const double down = loss();
    p[i] = saved;
    const double numeric = (up - down) / (2 * kStep);
    EXPECT_NEAR(analytic[i], numeric, kTol * (1 + std::fabs(numeric))) << what << "[" << i << "]";
  }
}

TEST(BlockFiniteDifference, InputAndEveryWeight) {
  const LlamaConfig c = TestConfig();
  LlamaWeights w = RandomWeights(c, 5);
  const int64_t batch = 2, seq = 5, n = batch * seq;
  Rng rng(9);
  Tensor x = RandomTensor({n, c.hidden_size}, rng);
  Tensor r = RandomTensor({n, c.hidden_size}, rng);
  std::vector<int32_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i % seq);
  Tensor positions = Tensor::FromHost(pos.data(), {n}, DType::kI32, Cpu());
  RopeTable rope = MakeRopeTable(c, seq, Cpu(), DType::kF64);
  BlockInput in{batch, seq, &positions, &rope};
  LayerWeights& lw = w.layers[0];

  auto loss = [&]() {
    BlockActivations acts;
    acts.x = x;
    return Dot(DecoderBlockForward(c, lw, in, &acts), r);
  };
  BlockActivations acts;
  acts.x = x;
  DecoderBlockForward(c, lw, in, &acts);
  LlamaWeights grads = ZerosLikeWeights(c, Cpu(), DType::kF64);
  Tensor dx = DecoderBlockBackward(c, lw, in, acts, r, &grads.layers[0]);

  CheckElements(x, dx.ToDoubles(), loss, "dx");
  LayerWeights& g = grads.layers[0];
  std::vector<std::pair<Tensor*, Tensor*>> pairs = {
      {&lw.input_norm, &g.input_norm}, {&lw.post_norm, &g.post_norm},
      {&lw.q.weight, &g.q.weight},     {&lw.q.bias, &g.q.bias},
      {&lw.k.weight, &g.k.weight},     {&lw.k.bias, &g.k.bias},
      {&lw.v.weight, &g.v.weight},     {&lw.v.bias, &g.v.bias},
      {&lw.o.weight, &g.o.weight},     {&lw.o.bias, &g.o.bias},
      {&lw.gate.weight, &g.gate.weight}, {&lw.gate.bias, &g.gate.bias},
      {&lw.up.weight, &g.up.weight},   {&lw.up.bias, &g.up.bias},
      {&lw.down.weight, &g.down.weight}, {&lw.down.bias, &g.down.bias}};
  for (size_t i = 0; i < pairs.size(); ++i) {
    CheckElements(*pairs[i].first, pairs[i].second->ToDoubles(), loss, "weight #" + std::to_string(i));
  }
}

// The block-final residual add left to the next norm (decoder_block.h: skip and
// residual) gives the unfused values bit for bit, in f32 and in bf16 (where the sum is
// rounded once when stored, as Axpy rounds it): y = m + skip, and a block given
// (x, residual) computes on and keeps x + residual. (The whole model runs fused; the test
// below checks its gradients against finite differences.)
TEST(BlockFusedResidual, MatchesTheUnfusedAddBitForBit) {
  const LlamaConfig c = TestConfig();
  const int64_t batch = 2, seq = 5, n = batch * seq;
  std::vector<int32_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i % seq);
  Tensor positions = Tensor::FromHost(pos.data(), {n}, DType::kI32, Cpu());
  for (DType dt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dt));
    const LlamaWeights w = InitLlamaWeights(c, 3, 0.3, Cpu(), dt);
    const RopeTable rope = MakeRopeTable(c, seq, Cpu(), AccumDType(dt));
    const BlockInput in{batch, seq, &positions, &rope};
    Rng rng(17);
    const Tensor x = RandomTensor({n, c.hidden_size}, rng).ConvertTo(dt);
    const Tensor residual = RandomTensor({n, c.hidden_size}, rng).ConvertTo(dt);

    // Unfused: the input summed by Axpy, the output's skip added by the block.
    BlockActivations unfused;
    unfused.x = x.Clone();
    Cpu()->Axpy(dt, 1.0, residual.data(), unfused.x.data(), n * c.hidden_size);
    const Tensor y = DecoderBlockForward(c, w.layers[0], in, &unfused);

    BlockActivations fused;
    fused.x = x.Clone();
    Tensor skip;
    Tensor m = DecoderBlockForward(c, w.layers[0], in, &fused, &residual, &skip);
    ASSERT_TRUE(skip.defined());
    EXPECT_EQ(fused.x.ToDoubles(), unfused.x.ToDoubles()) << "the stored block input";
    EXPECT_EQ(fused.x2.ToDoubles(), skip.ToDoubles()) << "skip is x2";
    Cpu()->Axpy(dt, 1.0, skip.data(), m.data(), n * c.hidden_size);
    EXPECT_EQ(m.ToDoubles(), y.ToDoubles()) << "m + skip against y";
    EXPECT_NE(m.ToDoubles(), skip.ToDoubles());
  }
}

TEST(BlockFiniteDifference, WholeModelEmbeddingHeadAndFinalNorm) {
  for (bool tied : {false, true}) {
    LlamaConfig c = TestConfig();
    c.tie_word_embeddings = tied;
    LlamaModel model(c, RandomWeights(c, 11), Cpu(), DType::kF64);
    const int64_t batch = 2, seq = 4;
    Rng rng(3);
    std::vector<int32_t> ids(batch * seq);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng.NextU64() % c.vocab_size);
    ids[1] = ids[6];  // a repeated id: its embedding gradient accumulates
    Tensor r = RandomTensor({batch, seq, c.vocab_size}, rng);
    auto loss = [&]() { return Dot(model.Forward(ids, batch, seq, nullptr).value(), r); };
    ForwardState state;
    model.Forward(ids, batch, seq, &state).value();
    LlamaWeights grads = ZerosLikeWeights(c, Cpu(), DType::kF64);
    model.Backward(state, r, &grads);
    CheckElements(model.weights().embed, grads.embed.ToDoubles(), loss, tied ? "tied embed" : "embed");
    CheckElements(model.weights().final_norm, grads.final_norm.ToDoubles(), loss, "final norm");
    if (!tied) CheckElements(model.weights().lm_head, grads.lm_head.ToDoubles(), loss, "lm_head");
    CheckElements(model.weights().layers[1].input_norm, grads.layers[1].input_norm.ToDoubles(), loss,
                  "layer 1 input norm");
    // Layer 0's weights reach the loss through both terms of its output (the MLP and the
    // skip x2, summed by layer 1's input norm): a lost or doubled skip path shows here.
    CheckElements(model.weights().layers[0].o.weight, grads.layers[0].o.weight.ToDoubles(), loss,
                  "layer 0 o_proj");
    CheckElements(model.weights().layers[0].input_norm, grads.layers[0].input_norm.ToDoubles(),
                  loss, "layer 0 input norm");
  }
}

TEST(BlockFiniteDifference, InputGradientWithoutWeightGradientsIsTheSame) {
  const LlamaConfig c = TestConfig();
  LlamaModel model(c, RandomWeights(c, 2), Cpu(), DType::kF64);
  std::vector<int32_t> ids = {1, 5, 7, 2, 22, 0};
  Rng rng(4);
  Tensor r = RandomTensor({2, 3, c.vocab_size}, rng);
  ForwardState s1, s2;
  model.Forward(ids, 2, 3, &s1).value();
  model.Forward(ids, 2, 3, &s2).value();
  LlamaWeights grads = ZerosLikeWeights(c, Cpu(), DType::kF64);
  std::vector<double> with = model.Backward(s1, r, &grads).ToDoubles();
  std::vector<double> without = model.Backward(s2, r, nullptr).ToDoubles();
  EXPECT_EQ(with, without);  // bitwise: the same operations in the same order
}

}  // namespace
}  // namespace pmol
