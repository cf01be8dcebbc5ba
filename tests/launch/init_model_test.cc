// `pmol init-model` contract, checked on the files it writes (read back with
// pmol::SafetensorsFile): DIR/config.json is the given text unchanged; DIR/model.safetensors
// holds exactly the Hugging Face tensor names and shapes for the config (the expected list
// is written out here from the HF modeling code, not taken from pmol: llama
// `attention_bias` adds q/k/v/o biases, qwen2 always has q/k/v biases and never an o
// bias, a tied head has no lm_head.weight); same seed gives byte-identical files and a
// different seed different values; --dtype=bf16 stores BF16.
// Values: norms exactly 1, biases exactly 0, and each matrix an N(0, 0.02^2) sample of
// n elements: 5-sigma bounds on its sample mean (sigma = 0.02 / sqrt(n)) and on its sample
// std (relative standard error ~1 / sqrt(2n)). The BF16 file must be the F32 file rounded
// to bf16: |bf16 - f32| <= 2^-8 |f32| (half a bf16 ulp is at most 2^-8 of the value).
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/io/safetensors.h"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

using Json = nlohmann::json;

// Tensor names and shapes of an HF checkpoint for `c`, from the HF modeling code.
std::map<std::string, Shape> ExpectedTensors(const Json& c) {
  const int64_t V = c["vocab_size"], H = c["hidden_size"], I = c["intermediate_size"];
  const int64_t L = c["num_hidden_layers"], nh = c["num_attention_heads"];
  const int64_t nkv = c.value("num_key_value_heads", nh);
  const int64_t hd = c.value("head_dim", H / nh);
  const bool qwen2 = c["model_type"] == "qwen2";
  const bool qkv_bias = qwen2 || c.value("attention_bias", false);
  const bool o_bias = !qwen2 && c.value("attention_bias", false);
  std::map<std::string, Shape> t;
  t["model.embed_tokens.weight"] = {V, H};
  for (int64_t i = 0; i < L; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t[p + "input_layernorm.weight"] = {H};
    t[p + "post_attention_layernorm.weight"] = {H};
    t[p + "self_attn.q_proj.weight"] = {nh * hd, H};
    t[p + "self_attn.k_proj.weight"] = {nkv * hd, H};
    t[p + "self_attn.v_proj.weight"] = {nkv * hd, H};
    t[p + "self_attn.o_proj.weight"] = {H, nh * hd};
    if (qkv_bias) {
      t[p + "self_attn.q_proj.bias"] = {nh * hd};
      t[p + "self_attn.k_proj.bias"] = {nkv * hd};
      t[p + "self_attn.v_proj.bias"] = {nkv * hd};
    }
    if (o_bias) t[p + "self_attn.o_proj.bias"] = {H};
    t[p + "mlp.gate_proj.weight"] = {I, H};
    t[p + "mlp.up_proj.weight"] = {I, H};
    t[p + "mlp.down_proj.weight"] = {H, I};
  }
  t["model.norm.weight"] = {H};
  if (!c.value("tie_word_embeddings", false)) t["lm_head.weight"] = {V, H};
  return t;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool IsNorm(const std::string& name) { return EndsWith(name, "norm.weight"); }
bool IsBias(const std::string& name) { return EndsWith(name, ".bias"); }

std::shared_ptr<SafetensorsFile> OpenModel(const std::string& dir) {
  auto f = SafetensorsFile::Open(dir + "/model.safetensors");
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *f : nullptr;
}

std::vector<double> Values(const SafetensorsFile& f, const std::string& name) {
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  return f.Load(name, cpu, DType::kF64).value().ToDoubles();
}

struct ConfigCase {
  const char* name;
  Json (*config)();
};

class InitModelConfigTest : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(InitModelConfigTest, WritesConfigUnchangedAndEveryHfTensor) {
  const Json config = GetParam().config();
  const std::string dir = FreshDir(CurrentTestName()) + "/model";
  ASSERT_NO_FATAL_FAILURE(InitModel(config, dir, /*seed=*/3));
  EXPECT_EQ(ReadFile(dir + "/config.json"), ReadFile(dir + ".config.json"));
  auto file = OpenModel(dir);
  ASSERT_NE(file, nullptr);
  const std::map<std::string, Shape> want = ExpectedTensors(config);
  std::set<std::string> seen;
  for (const SafetensorsEntry& e : file->entries()) {
    seen.insert(e.name);
    auto it = want.find(e.name);
    if (it == want.end()) {
      ADD_FAILURE() << "unexpected tensor " << e.name;
      continue;
    }
    EXPECT_EQ(ShapeString(e.shape), ShapeString(it->second)) << e.name;
    EXPECT_EQ(e.dtype, DType::kF32) << e.name;
  }
  for (const auto& [name, shape] : want) EXPECT_TRUE(seen.count(name)) << "missing " << name;
}

TEST_P(InitModelConfigTest, NormsOneBiasesZeroMatricesNormalWithStd002) {
  const Json config = GetParam().config();
  const std::string dir = FreshDir(CurrentTestName()) + "/model";
  ASSERT_NO_FATAL_FAILURE(InitModel(config, dir, /*seed=*/11));
  auto file = OpenModel(dir);
  ASSERT_NE(file, nullptr);
  constexpr double kStd = 0.02, kSigmas = 5.0;
  std::set<double> first_values;  // independent streams: no two matrices start alike
  for (const SafetensorsEntry& e : file->entries()) {
    const std::vector<double> v = Values(*file, e.name);
    if (IsNorm(e.name) || IsBias(e.name)) {
      const double want = IsNorm(e.name) ? 1.0 : 0.0;
      for (size_t i = 0; i < v.size(); ++i) {
        ASSERT_EQ(v[i], want) << e.name << "[" << i << "]";
      }
      continue;
    }
    const double n = static_cast<double>(v.size());
    double mean = 0.0;
    for (double x : v) mean += x;
    mean /= n;
    double ss = 0.0;
    for (double x : v) ss += (x - mean) * (x - mean);
    const double std = std::sqrt(ss / (n - 1));
    EXPECT_LE(std::fabs(mean), kSigmas * kStd / std::sqrt(n)) << e.name << " (n = " << n << ")";
    EXPECT_LE(std::fabs(std / kStd - 1.0), kSigmas / std::sqrt(2.0 * n))
        << e.name << " std " << std << " (n = " << n << ")";
    EXPECT_TRUE(first_values.insert(v[0]).second) << e.name << " starts like another matrix";
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, InitModelConfigTest,
                         ::testing::Values(ConfigCase{"llama_untied_attention_bias", &LlamaConfig},
                                           ConfigCase{"llama_tied", &LlamaTiedConfig},
                                           ConfigCase{"qwen2", &Qwen2Config}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(InitModelTest, SameSeedSameBytesDifferentSeedDifferentValues) {
  const std::string root = FreshDir(CurrentTestName());
  ASSERT_NO_FATAL_FAILURE(InitModel(LlamaConfig(), root + "/a", /*seed=*/7));
  ASSERT_NO_FATAL_FAILURE(InitModel(LlamaConfig(), root + "/b", /*seed=*/7));
  ASSERT_NO_FATAL_FAILURE(InitModel(LlamaConfig(), root + "/c", /*seed=*/8));
  const std::string a = ReadFile(root + "/a/model.safetensors");
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == ReadFile(root + "/b/model.safetensors")) << "same seed, different bytes";
  EXPECT_NE(a, ReadFile(root + "/c/model.safetensors"));
  // Every random tensor changes with the seed, not just some.
  auto fa = OpenModel(root + "/a"), fc = OpenModel(root + "/c");
  ASSERT_TRUE(fa && fc);
  for (const SafetensorsEntry& e : fa->entries()) {
    if (IsNorm(e.name) || IsBias(e.name)) continue;
    EXPECT_NE(Values(*fa, e.name), Values(*fc, e.name)) << e.name << " ignores the seed";
  }
}

TEST(InitModelTest, Bf16IsTheF32InitRoundedToBf16) {
  const std::string root = FreshDir(CurrentTestName());
  ASSERT_NO_FATAL_FAILURE(InitModel(Qwen2Config(), root + "/f32", /*seed=*/5, "f32"));
  ASSERT_NO_FATAL_FAILURE(InitModel(Qwen2Config(), root + "/bf16", /*seed=*/5, "bf16"));
  auto f32 = OpenModel(root + "/f32"), bf16 = OpenModel(root + "/bf16");
  ASSERT_TRUE(f32 && bf16);
  ASSERT_EQ(bf16->entries().size(), f32->entries().size());
  for (const SafetensorsEntry& e : bf16->entries()) {
    EXPECT_EQ(e.dtype, DType::kBF16) << e.name;
    ASSERT_NE(f32->Find(e.name), nullptr) << e.name;
    EXPECT_EQ(ShapeString(e.shape), ShapeString(f32->Find(e.name)->shape)) << e.name;
    const std::vector<double> want = Values(*f32, e.name), got = Values(*bf16, e.name);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_LE(std::fabs(got[i] - want[i]), std::ldexp(std::fabs(want[i]), -8))
          << e.name << "[" << i << "]: bf16 " << got[i] << " vs f32 " << want[i];
    }
  }
}

}  // namespace
}  // namespace pmol
