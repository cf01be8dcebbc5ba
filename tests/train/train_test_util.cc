// Fixtures of the training tests; see train_test_util.h.
#include "tests/train/train_test_util.h"

#include <cmath>

#include "tests/model/model_test_util.h"

namespace pmol {

namespace {
constexpr char kModelJson[] = R"({"model_type": "llama", "hidden_size": 16,
    "intermediate_size": 24, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 48, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": false})";
}  // namespace

std::string TinyModelDir() {
  static const std::string dir = [] {
    const std::string d = TempDir() + "/model";
    WriteRandomModel(kModelJson, d, 17, 0.2);
    return d;
  }();
  return dir;
}

config::RunConfig TinyConfig() {
  config::RunConfig c;
  c.mutable_model()->set_path(TinyModelDir());
  c.mutable_model()->set_dtype("f64");
  c.mutable_model()->set_threads(2);
  c.mutable_adapter()->set_num_groups(2);
  c.mutable_adapter()->set_experts_per_group(2);
  c.mutable_adapter()->set_rank(3);
  c.set_seed(5);
  return c;
}

data::PreferenceDataset TinyDataset(int first, int count, int num_labels) {
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5},   {6, 7, 8, 9},
                                                     {10},      {11, 12}, {13, 14, 15}};
  const std::vector<std::vector<int32_t>> chosen = {{11, 12},         {13, 14, 15}, {16},
                                                    {17, 18, 19, 20}, {30, 31},     {32}};
  const std::vector<std::vector<int32_t>> rejected = {{21, 22, 23}, {24},         {25, 26},
                                                      {27, 28},     {33, 34, 35}, {36, 37}};
  data::PreferenceDataset ds;
  for (int i = first; i < first + count; ++i) {
    data::TokenizedPair p;
    p.prompt = prompts[i];
    p.chosen = chosen[i];
    p.rejected = rejected[i];
    p.preference = i % num_labels;
    p.line = i + 1;
    ds.pairs.push_back(p);
  }
  ds.source_sizes = {count};
  ds.mix_weights = {1.0};
  return ds;
}

data::PreferenceBatch TinyBatch(int first, int count, int num_labels) {
  const data::PreferenceDataset ds = TinyDataset(first, count, num_labels);
  std::vector<int64_t> idx;
  for (int i = 0; i < count; ++i) idx.push_back(i);
  return data::MakePaddedBatch(ds, idx, count, kTinySeqLen, 0);
}

void PerturbB(RunComponents& run) {
  for (AdaptedModule& am : run.adapters->modules()) {
    double* b = am.params.lora_B.data_as<double>();
    for (int64_t i = 0; i < am.params.lora_B.numel(); ++i) b[i] = 0.05 * std::sin(1.0 + i);
  }
}

std::vector<double> AllGrads(RunComponents& run) {
  std::vector<double> out;
  for (auto& [name, g] : run.TrainableGrads()) {
    const std::vector<double> v = g.ToDoubles();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

}  // namespace pmol
