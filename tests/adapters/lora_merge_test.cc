// MergeLoraIntoWeights: the merged frozen model's logits equal the LoRA-adapted model's
// (f64; the two differ only in summation order, so 1e-12 relative to max(1, |logit|)),
// while the adapter moves the logits by more than 1e-3 (so the check is not empty); a
// PMoL adapter is refused. WriteAdapterFolder: tensors and config reload.
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/adapters/adapter_files.h"
#include "pmol/adapters/lora_merge.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/hf_config.h"
#include "pmol/model/llama_model.h"
#include "tests/model/model_test_util.h"

namespace pmol {
namespace {

Backend* Cpu() { return GetBackend(DeviceType::kCpu, 2).value(); }

LlamaConfig TinyConfig() {
  return ParseHfConfig(R"({"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
      "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
      "vocab_size": 40, "rms_norm_eps": 1e-6, "tie_word_embeddings": false})", "config.json").value();
}

AdapterOptions Options(AdapterKind kind) {
  AdapterOptions o;
  o.kind = kind;
  o.layout.experts_per_group = kind == AdapterKind::kLora ? std::vector<int32_t>{1} : std::vector<int32_t>{2, 1};
  o.layout.num_empty = kind == AdapterKind::kLora ? 0 : 1;
  o.layout.rank = 3;
  o.alpha = 5.0;
  o.targets.fill(true);
  o.group_names = kind == AdapterKind::kLora ? std::vector<std::string>{""} : std::vector<std::string>{"a", "b"};
  return o;
}

void RandomizeB(PmolAdapters& adapters) {
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (AdaptedModule& am : adapters.modules()) {
    double* b = am.params.lora_B.data_as<double>();
    for (int64_t i = 0; i < am.params.lora_B.numel(); ++i) b[i] = normal(rng);
  }
}

TEST(LoraMergeTest, MergedModelEqualsAdaptedModel) {
  const LlamaConfig config = TinyConfig();
  LlamaModel model(config, InitLlamaWeights(config, 3, 0.2, Cpu(), DType::kF64), Cpu(), DType::kF64);
  PmolAdapters adapters(Options(AdapterKind::kLora), config, Cpu(), DType::kF64);
  adapters.Initialize(5);
  RandomizeB(adapters);
  LlamaWeights merged = CloneWeights(config, model.weights());
  ASSERT_TRUE(MergeLoraIntoWeights(adapters, merged).ok());
  LlamaModel merged_model(config, std::move(merged), Cpu(), DType::kF64);

  const std::vector<int32_t> ids = {1, 5, 9, 2, 33, 7, 0, 12, 3, 39, 8, 4};
  const std::vector<double> adapted = model.Forward(ids, 2, 6, nullptr, &adapters)->ToDoubles();
  const std::vector<double> folded = merged_model.Forward(ids, 2, 6, nullptr)->ToDoubles();
  const std::vector<double> base = model.Forward(ids, 2, 6, nullptr)->ToDoubles();
  ExpectClose(folded, adapted, 1e-12, "merged vs adapted logits");
  double max_shift = 0;
  for (size_t i = 0; i < adapted.size(); ++i) max_shift = std::max(max_shift, std::fabs(adapted[i] - base[i]));
  EXPECT_GT(max_shift, 1e-3);
}

TEST(LoraMergeTest, RefusesPmol) {
  const LlamaConfig config = TinyConfig();
  LlamaWeights weights = InitLlamaWeights(config, 3, 0.2, Cpu(), DType::kF64);
  PmolAdapters adapters(Options(AdapterKind::kPmol), config, Cpu(), DType::kF64);
  absl::Status s = MergeLoraIntoWeights(adapters, weights);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("only a LoRA adapter"), absl::string_view::npos);
}

TEST(AdapterFolderTest, WritesTensorsAndConfigThatReload) {
  const LlamaConfig config = TinyConfig();
  PmolAdapters adapters(Options(AdapterKind::kPmol), config, Cpu(), DType::kF64);
  adapters.Initialize(5);
  RandomizeB(adapters);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/adapter";
  ASSERT_TRUE(WriteAdapterFolder(adapters, dir, "/models/base").ok());
  const nlohmann::json cfg =
      nlohmann::json::parse(ReadFileToString(dir + "/adapter_config.json").value());
  EXPECT_EQ(cfg["adapter_type"], "pmol");
  EXPECT_EQ(cfg["base_model"], "/models/base");
  EXPECT_EQ(cfg["rank"], 3);
  EXPECT_EQ(cfg["router_slots"], 4);
  EXPECT_EQ(cfg["groups"][0]["name"], "a");
  EXPECT_EQ(cfg["groups"][0]["experts"], 2);
  EXPECT_EQ(cfg["target_modules"].size(), 7u);
  EXPECT_TRUE(cfg["layers"].is_null());
  PmolAdapters reloaded(Options(AdapterKind::kPmol), config, Cpu(), DType::kF64);
  ASSERT_TRUE(reloaded.Load(dir + "/adapter_model.safetensors").ok());
  NamedTensors a = adapters.Params(), b = reloaded.Params();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.ToDoubles(), b[i].second.ToDoubles()) << a[i].first;
}

}  // namespace
}  // namespace pmol
