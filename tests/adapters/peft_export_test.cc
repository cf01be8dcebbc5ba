// LoRA export in PEFT's format: the folder holds adapter_config.json with PEFT's fields
// and adapter_model.safetensors with exactly PEFT's tensor names and shapes; and the
// exported tensors, merged as PEFT merges them (W' = W + lora_alpha/r * B A), give a
// frozen model whose logits equal the adapted model's (f64, 1e-12 relative: the two
// differ only in summation order). A PMoL adapter is refused.
#include <cmath>
#include <random>
#include <set>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/adapters/peft_export.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/hf_config.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_model.h"

namespace pmol {
namespace {

Backend* Cpu() { return GetBackend(DeviceType::kCpu, 2).value(); }

LlamaConfig TinyConfig() {
  return ParseHfConfig(R"({"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
      "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
      "vocab_size": 40, "rms_norm_eps": 1e-6, "tie_word_embeddings": false})", "config.json").value();
}

AdapterOptions LoraOptions() {
  AdapterOptions o;
  o.kind = AdapterKind::kLora;
  o.layout.experts_per_group = {1};
  o.layout.rank = 3;
  o.alpha = 6.0;
  o.targets[static_cast<int>(LinearModule::kQ)] = true;
  o.targets[static_cast<int>(LinearModule::kV)] = true;
  o.targets[static_cast<int>(LinearModule::kDown)] = true;
  o.layers = {1};
  return o;
}

std::string TestDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp ? tmp : "/tmp") + "/" + name;
}

TEST(PeftExportTest, WritesPeftNamesAndConfigAndMergesToTheSameModel) {
  const LlamaConfig config = TinyConfig();
  LlamaModel model(config, InitLlamaWeights(config, 3, 0.2, Cpu(), DType::kF64), Cpu(),
                   DType::kF64);
  PmolAdapters adapters(LoraOptions(), config, Cpu(), DType::kF64);
  adapters.Initialize(5);
  std::mt19937 rng(9);
  std::normal_distribution<double> normal(0.0, 0.3);
  for (AdaptedModule& am : adapters.modules()) {
    double* b = am.params.lora_B.data_as<double>();
    for (int64_t i = 0; i < am.params.lora_B.numel(); ++i) b[i] = normal(rng);  // nonzero B
  }
  const std::string dir = TestDir("peft");
  ASSERT_TRUE(ExportPeftAdapter(adapters, dir, "/models/base").ok());

  const nlohmann::json cfg = nlohmann::json::parse(ReadFileToString(dir + "/adapter_config.json").value());
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["r"], 3);
  EXPECT_EQ(cfg["lora_alpha"], 6.0);
  EXPECT_EQ(cfg["bias"], "none");
  EXPECT_EQ(cfg["base_model_name_or_path"], "/models/base");
  EXPECT_EQ(cfg["target_modules"], nlohmann::json({"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(cfg["layers_to_transform"], nlohmann::json({1}));

  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors").value();
  std::set<std::string> names;
  for (const SafetensorsEntry& e : file->entries()) names.insert(e.name);
  const std::set<std::string> want = {
      "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight",
      "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
      "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight",
      "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
      "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
      "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"};
  EXPECT_EQ(names, want);
  EXPECT_EQ(file->Find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")->shape,
            (Shape{3, config.intermediate_size}));
  EXPECT_EQ(file->Find("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")->shape,
            (Shape{config.hidden_size, 3}));

  // Merge the exported tensors into a copy of the base as PEFT does.
  LlamaWeights merged = InitLlamaWeights(config, 3, 0.2, Cpu(), DType::kF64);
  auto merge = [&](const std::string& module, Tensor& w) {
    const Tensor a = file->Load("base_model.model." + module + ".lora_A.weight", Cpu(), DType::kF64).value();
    const Tensor b = file->Load("base_model.model." + module + ".lora_B.weight", Cpu(), DType::kF64).value();
    const int64_t out = w.dim(0), in = w.dim(1), r = a.dim(0);
    double* wd = w.data_as<double>();
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        double sum = 0;
        for (int64_t j = 0; j < r; ++j) sum += b.data_as<double>()[o * r + j] * a.data_as<double>()[j * in + i];
        wd[o * in + i] += 6.0 / 3.0 * sum;
      }
  };
  merge("model.layers.1.self_attn.q_proj", merged.layers[1].q.weight);
  merge("model.layers.1.self_attn.v_proj", merged.layers[1].v.weight);
  merge("model.layers.1.mlp.down_proj", merged.layers[1].down.weight);
  LlamaModel merged_model(config, std::move(merged), Cpu(), DType::kF64);

  const std::vector<int32_t> ids = {1, 5, 9, 2, 33, 7, 0, 12, 3, 39, 8, 4};
  const std::vector<double> adapted = model.Forward(ids, 2, 6, nullptr, &adapters)->ToDoubles();
  const std::vector<double> want_logits = merged_model.Forward(ids, 2, 6, nullptr)->ToDoubles();
  const std::vector<double> base = model.Forward(ids, 2, 6, nullptr)->ToDoubles();
  double max_diff = 0, max_shift = 0;
  for (size_t i = 0; i < adapted.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(adapted[i] - want_logits[i]));
    max_shift = std::max(max_shift, std::fabs(adapted[i] - base[i]));
  }
  EXPECT_LT(max_diff, 1e-12);
  EXPECT_GT(max_shift, 1e-3) << "the adapter must change the logits, or the check is empty";
}

TEST(PeftExportTest, RefusesPmolAdapters) {
  const LlamaConfig config = TinyConfig();
  AdapterOptions o = LoraOptions();
  o.kind = AdapterKind::kPmol;
  o.layout.experts_per_group = {2, 2};
  o.layout.num_empty = 1;
  PmolAdapters adapters(o, config, Cpu(), DType::kF64);
  const absl::Status s = ExportPeftAdapter(adapters, TestDir("peft_pmol"), "base");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("adapter.kind"), std::string::npos) << s;
}

}  // namespace
}  // namespace pmol
