// Whole-model oracle test: pmol's Llama-family forward and backward against an
// independent PyTorch implementation (tests/oracles/torch_llama.py, float64 autograd).
// For each config (GQA ratios 4/2, 4/4, 6/1; q/k/v/o and MLP biases; tied and untied
// heads; default, linear and llama3 RoPE scaling; head_dim != hidden/heads; odd sizes)
// a model is written to disk with random weights, random norms and random biases, loaded
// back, and compared on: logits, the gradient at the embedding output, and the gradient
// of every weight, for loss = sum(logits * R) with a random cotangent R.
// Tolerances (max |pmol - torch| <= tol * max(1, max |torch|)):
//   f64: 1e-9. Both sides compute in double; only summation order differs (~1e-15
//        relative per op, amplified by a few layers), so 1e-9 leaves >1e5x headroom while
//        any formula error shows up at >= 1e-4.
//   f32: 2e-4 for logits and 1e-3 for gradients: f32 epsilon 1.2e-7 times reduction
//        lengths of ~100 and a 2-layer chain, with 10x headroom.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/core/rng.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_model.h"
#include "tests/model/model_test_util.h"

namespace pmol {
namespace {

struct Case {
  std::string name;
  std::string config_json;
};

std::vector<Case> Cases() {
  return {
      {"llama_gqa_4_2_untied",
       R"({"model_type": "llama", "vocab_size": 101, "hidden_size": 48, "intermediate_size": 80,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false})"},
      {"llama_mha_tied_biases_llama3_rope",
       R"({"model_type": "llama", "vocab_size": 89, "hidden_size": 48, "intermediate_size": 72,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
           "attention_bias": true, "mlp_bias": true, "tie_word_embeddings": true,
           "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
           "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}})"},
      {"qwen2_gqa_6_1_tied_linear_rope_odd",
       R"({"model_type": "qwen2", "vocab_size": 97, "hidden_size": 36, "intermediate_size": 50,
           "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 1,
           "tie_word_embeddings": true, "rms_norm_eps": 1e-6, "rope_theta": 1000.0,
           "rope_scaling": {"type": "linear", "factor": 2.0}})"},
      {"mistral_head_dim_10",
       R"({"model_type": "mistral", "vocab_size": 103, "hidden_size": 36, "intermediate_size": 44,
           "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 10, "tie_word_embeddings": false, "rms_norm_eps": 1e-5,
           "sliding_window": 4096})"},
  };
}

constexpr int64_t kBatch = 2, kSeq = 7;

struct PmolResult {
  std::map<std::string, std::vector<double>> tensors;
};

PmolResult RunPmol(const std::string& dir, DType dtype, const std::vector<int32_t>& ids,
                   const std::vector<double>& cotangent, bool recompute) {
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  absl::StatusOr<LlamaModel> model = LlamaModel::Load(dir, cpu, dtype);
  PMOL_CHECK(model.ok());
  model->set_recompute_activations(recompute);
  ForwardState state;
  Tensor logits = model->Forward(ids, kBatch, kSeq, &state).value();
  PmolResult r;
  r.tensors["logits"] = logits.ToDoubles();
  Tensor ct = Tensor::FromHost(cotangent.data(), logits.shape(), DType::kF64, cpu).ConvertTo(dtype);
  LlamaWeights grads = ZerosLikeWeights(model->config(), cpu, dtype);
  Tensor dx = model->Backward(state, ct, &grads);
  r.tensors["grad/inputs_embeds"] = dx.ToDoubles();
  for (auto& [name, t] : NamedWeights(model->config(), grads)) r.tensors["grad/" + name] = t.ToDoubles();
  return r;
}

class LlamaTorchOracleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // One python run for every case keeps torch's start-up cost to once.
    nlohmann::json jobs = nlohmann::json::array();
    for (const Case& c : Cases()) {
      const std::string dir = TempDir() + "/" + c.name;
      WriteRandomModel(c.config_json, dir, /*seed=*/17, /*stddev=*/0.15);
      Rng rng(23);
      std::vector<int32_t> ids(kBatch * kSeq);
      LlamaConfig cfg = ParseHfConfig(c.config_json, c.name).value();
      for (int32_t& id : ids) id = static_cast<int32_t>(rng.NextU64() % cfg.vocab_size);
      std::vector<double> ct(kBatch * kSeq * cfg.vocab_size);
      for (double& v : ct) v = rng.Normal();
      Backend* cpu = GetBackend(DeviceType::kCpu).value();
      PMOL_CHECK(WriteSafetensors(dir + "/cotangent.safetensors",
                                  {{"cotangent", Tensor::FromHost(ct.data(), {kBatch, kSeq, cfg.vocab_size},
                                                                  DType::kF64, cpu)}})
                     .ok());
      nlohmann::json rows = nlohmann::json::array();
      for (int64_t b = 0; b < kBatch; ++b)
        rows.push_back(std::vector<int32_t>(ids.begin() + b * kSeq, ids.begin() + (b + 1) * kSeq));
      jobs.push_back({{"model", dir}, {"tokens", rows}, {"cotangent", dir + "/cotangent.safetensors"},
                      {"out", dir + "/torch.safetensors"}});
      Inputs()[c.name] = {ids, ct};
    }
    const std::string jobs_path = TempDir() + "/torch_jobs.json";
    std::ofstream(jobs_path) << jobs.dump();
    RunPythonOracle("tests/oracles/torch_llama.py", jobs_path);
  }

  struct CaseInputs {
    std::vector<int32_t> ids;
    std::vector<double> cotangent;
  };
  static std::map<std::string, CaseInputs>& Inputs() {
    static auto* inputs = new std::map<std::string, CaseInputs>();
    return *inputs;
  }

  void Compare(const Case& c, DType dtype, double logits_tol, double grad_tol, bool recompute) {
    const std::string dir = TempDir() + "/" + c.name;
    const CaseInputs& in = Inputs()[c.name];
    PmolResult mine = RunPmol(dir, dtype, in.ids, in.cotangent, recompute);
    auto ref = SafetensorsFile::Open(dir + "/torch.safetensors").value();
    Backend* cpu = GetBackend(DeviceType::kCpu).value();
    ASSERT_EQ(mine.tensors.size(), ref->entries().size());  // logits, inputs_embeds, all weights
    for (const auto& [name, values] : mine.tensors) {
      ASSERT_NE(ref->Find(name), nullptr) << name;
      std::vector<double> want = ref->Load(name, cpu, DType::kF64).value().ToDoubles();
      const double tol = name == "logits" ? logits_tol : grad_tol;
      ExpectClose(values, want, tol, c.name + " " + name);
    }
  }
};

TEST_F(LlamaTorchOracleTest, Float64MatchesTorch) {
  for (const Case& c : Cases()) Compare(c, DType::kF64, 1e-9, 1e-9, /*recompute=*/false);
}

TEST_F(LlamaTorchOracleTest, Float32MatchesTorch) {
  for (const Case& c : Cases()) Compare(c, DType::kF32, 2e-4, 1e-3, /*recompute=*/false);
}

TEST_F(LlamaTorchOracleTest, RecomputeMatchesTorch) {
  for (const Case& c : Cases()) Compare(c, DType::kF64, 1e-9, 1e-9, /*recompute=*/true);
}

}  // namespace
}  // namespace pmol
