// `pmol grads` against the independent float64 PyTorch oracle (tests/oracles/torch_pmol.py).
// Each case writes a random tiny model (WriteRandomModel: weights N(0, 0.15^2), random
// norms and biases), a random adapter file with NONZERO lora_B (A ~ N(0, 1/d_in),
// B ~ N(0, 0.1^2), router ~ N(0, 0.5^2) so routing is far from uniform and top-k picks
// with clear gaps), a batch of 3-4 pairs of different prompt/response lengths and
// preferences, and a run.textproto; then runs `pmol grads --config --batch --adapter
// --out` and the oracle on the same files, and compares:
//   * names: pmol's output holds exactly the trainable tensors the oracle trains, each
//     with `grad/<name>`, plus f32 scalars loss/total, loss/dpo, loss/group, loss/balance
//     (other `loss/*` scalars are allowed); nothing missing, nothing extra.
//   * dtypes and shapes: trainable tensors and gradients in the compute dtype.
//   * values of the trainable tensors: exactly the adapter file's (pmol loaded them).
//   * every gradient and the four losses.
// Covered: groups 1-4, experts per group 1-3 (also unequal {2,1,3}), empty experts 0/1/2,
// dense and top-k 1, 2, 3 and all slots, router temperatures 0.5/0.7/2, sigmoid, IPO,
// IPO length-normalised, hinge (beta chosen from the oracle's deltas so pairs lie on
// both sides of the kink, never near it), conservative eps = 0.1, target subsets (q+v,
// MLP only via *_proj names, o+down), layer subsets, a Qwen2 model (qkv bias, GQA, tied
// head) and a Llama with attention biases and GQA, config defaults left unset, LoRA
// and full fine-tuning baselines, f32 compute, and SFT / REWARD objectives (skipped,
// saying so, while pmol rejects objective.kind for them).
// Tolerances (err = max |pmol - oracle| over one tensor, max|oracle| over that tensor):
//   f64 compute: gradients err <= 1e-9 * max(max|oracle|, 1e-6) (per tensor, so tighter
//     than 1e-9 * max(1, max|oracle|) for the small gradients here). Both sides run in
//     double and differ only in summation order: observed <= 1.2e-12 relative (router
//     gradients at temperature 0.5), most cases ~1e-14. Values of trainable tensors:
//     exact. Scalars (losses, metrics) are stored as f32: err <= 1e-6 * |oracle| + 1e-12
//     (f32 rounding is 6e-8 relative; observed <= 0.06 of the bound).
//   f32 compute: gradients err <= 2e-4 * max|oracle| + 1e-9, scalars err <= 1e-4 *
//     |oracle| + 1e-6: f32 epsilon 1.2e-7 through two layers, sequence sums and the
//     reference subtraction. Observed: gradients <= 1.6e-6 relative (1/125 of the bound),
//     scalars <= 0.01 of the bound.
// Every case prints one line: tensors compared, worst err/tol, worst relative error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/core/rng.h"
#include "tests/grads/grads_test_util.h"
#include "tests/model/model_test_util.h"

namespace pmol::grads_test {
namespace {

// ---- Models ---------------------------------------------------------------------------

Json TinyLlama() {
  return {{"model_type", "llama"},      {"vocab_size", 64},       {"hidden_size", 32},
          {"intermediate_size", 48},    {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 4},   {"tie_word_embeddings", false},
          {"rms_norm_eps", 1e-5},       {"rope_theta", 10000.0}};
}

// Qwen2: q/k/v biases, GQA 4:2, tied head.
Json TinyQwen2() {
  return {{"model_type", "qwen2"},      {"vocab_size", 61},       {"hidden_size", 24},
          {"intermediate_size", 40},    {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2},   {"tie_word_embeddings", true},
          {"rms_norm_eps", 1e-6},       {"rope_theta", 1000000.0}};
}

// Llama with q/k/v/o biases, GQA 4:2, head_dim 6 != hidden / heads.
Json TinyLlamaBiasGqa() {
  return {{"model_type", "llama"},      {"vocab_size", 67},       {"hidden_size", 16},
          {"intermediate_size", 36},    {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2},   {"head_dim", 6},          {"attention_bias", true},
          {"tie_word_embeddings", false}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}};
}

// ---- Cases ----------------------------------------------------------------------------

struct Case {
  std::string name;
  Json model = TinyLlama();
  std::string dtype = "f64";
  // adapter
  std::string kind = "PMOL";               // PMOL, LORA, FULL
  std::vector<int> groups = {2, 2};        // experts per group
  bool groups_as_num = false;              // write num_groups/experts_per_group instead
  int empty = 1;
  int rank = 4;
  double alpha = 8;
  double temperature = 1;
  int top_k = 0;
  std::vector<std::string> targets;        // empty: all seven (field left unset)
  std::vector<int> layers;                 // empty: all (field left unset)
  // objective
  std::string objective = "DPO";           // DPO, SFT, REWARD
  std::string loss = "SIGMOID";
  double beta = 0.2;
  double label_smoothing = 0;
  bool ipo_norm = false;
  double group_weight = 0.3, group_smoothing = 0.1, balance_weight = 0.5;
  bool minimal = false;       // write only fields that differ from the proto defaults
  bool auto_hinge_beta = false;
  int pairs = 4;
  uint64_t seed = 1;
};

std::vector<Case> AllCases() {
  std::vector<Case> v;
  auto add = [&](Case c) { v.push_back(std::move(c)); };
  {
    Case c; c.name = "dense_2x2_empty1_sigmoid"; add(c);
  }
  {
    Case c; c.name = "groups_2_1_3_empty2_top2_temp07"; c.groups = {2, 1, 3}; c.empty = 2;
    c.top_k = 2; c.temperature = 0.7; c.beta = 0.5; c.seed = 2; add(c);
  }
  {
    Case c; c.name = "one_group_one_expert_no_empty"; c.groups = {1}; c.empty = 0; c.seed = 3;
    c.pairs = 3; add(c);
  }
  {
    Case c; c.name = "four_groups_of_3_top1_temp2"; c.groups = {3, 3, 3, 3};
    c.groups_as_num = true; c.top_k = 1; c.temperature = 2.0; c.seed = 4; add(c);
  }
  {
    Case c; c.name = "top_k_all_slots"; c.groups = {2, 1}; c.empty = 1; c.top_k = 4; c.seed = 5;
    add(c);
  }
  {
    Case c; c.name = "no_empty_top2_groups_1_2"; c.groups = {1, 2}; c.empty = 0; c.top_k = 2;
    c.seed = 6; add(c);
  }
  {
    Case c; c.name = "empty2_dense_groups_3_1_temp05"; c.groups = {3, 1}; c.empty = 2;
    c.temperature = 0.5; c.seed = 7; add(c);
  }
  {
    Case c; c.name = "ipo"; c.loss = "IPO"; c.beta = 0.5; c.groups = {2, 1, 3}; c.seed = 8; add(c);
  }
  {
    Case c; c.name = "ipo_length_normalized_top2"; c.loss = "IPO"; c.ipo_norm = true; c.beta = 0.5;
    c.top_k = 2; c.seed = 9; add(c);
  }
  {
    Case c; c.name = "hinge_both_sides_of_kink"; c.loss = "HINGE"; c.auto_hinge_beta = true;
    c.groups = {2, 1, 3}; c.seed = 10; add(c);
  }
  {
    Case c; c.name = "conservative_eps01"; c.loss = "CONSERVATIVE"; c.label_smoothing = 0.1;
    c.beta = 0.5; c.seed = 11; add(c);
  }
  {
    Case c; c.name = "targets_q_v"; c.targets = {"q", "v"}; c.seed = 12; add(c);
  }
  {
    Case c; c.name = "targets_mlp_proj_names"; c.targets = {"gate_proj", "up_proj", "down_proj"};
    c.groups = {2, 1, 3}; c.top_k = 3; c.seed = 13; add(c);
  }
  {
    Case c; c.name = "layer1_only_o_down"; c.layers = {1}; c.targets = {"o", "down"}; c.seed = 14;
    add(c);
  }
  {
    Case c; c.name = "layer0_only_all_targets_group_smoothing0"; c.layers = {0};
    c.group_smoothing = 0; c.seed = 15; add(c);
  }
  {
    Case c; c.name = "qwen2_qkv_bias_gqa_tied"; c.model = TinyQwen2(); c.groups = {2, 1, 3};
    c.top_k = 3; c.seed = 16; add(c);
  }
  {
    Case c; c.name = "llama_attention_bias_gqa_head_dim6"; c.model = TinyLlamaBiasGqa();
    c.groups = {1, 2}; c.empty = 2; c.seed = 17; add(c);
  }
  {
    Case c; c.name = "config_defaults"; c.minimal = true; c.groups = {2, 2};
    c.groups_as_num = true; c.rank = 8; c.alpha = 16; c.beta = 0.1; c.group_weight = 0.1;
    c.group_smoothing = 0.1; c.balance_weight = 0.01; c.seed = 18; add(c);
  }
  {
    Case c; c.name = "lora"; c.kind = "LORA"; c.seed = 19; add(c);
  }
  {
    Case c; c.name = "lora_q_v_layer1_ipo"; c.kind = "LORA"; c.targets = {"q", "v"};
    c.layers = {1}; c.loss = "IPO"; c.beta = 0.5; c.seed = 20; add(c);
  }
  {
    Case c; c.name = "full_finetune"; c.kind = "FULL"; c.seed = 21; c.pairs = 3; add(c);
  }
  {
    Case c; c.name = "full_finetune_qwen2_tied_bias_conservative"; c.kind = "FULL";
    c.model = TinyQwen2(); c.loss = "CONSERVATIVE"; c.label_smoothing = 0.1; c.seed = 22;
    c.pairs = 3; add(c);
  }
  {
    Case c; c.name = "f32_dense_groups_2_1"; c.dtype = "f32"; c.groups = {2, 1}; c.seed = 23;
    add(c);
  }
  {
    Case c; c.name = "f32_lora"; c.dtype = "f32"; c.kind = "LORA"; c.seed = 24; add(c);
  }
  {
    Case c; c.name = "sft_pmol"; c.objective = "SFT"; c.seed = 25; add(c);
  }
  {
    Case c; c.name = "reward_pmol"; c.objective = "REWARD"; c.seed = 26; add(c);
  }
  return v;
}

// ---- Files of a case ------------------------------------------------------------------

// Group names: pmol names per-preference metrics after them.
const char* kGroupNames[] = {"helpful", "harmless", "honest", "concise"};

const char* kTargetNames[] = {"q", "k", "v", "o", "gate", "up", "down"};

std::string ModulePath(const std::string& target) {
  std::string t = target;
  if (t.size() > 5 && t.substr(t.size() - 5) == "_proj") t = t.substr(0, t.size() - 5);
  if (t == "q" || t == "k" || t == "v" || t == "o") return "self_attn." + t + "_proj";
  return "mlp." + t + "_proj";
}

// {d_out, d_in} of a target's base weight.
std::pair<int64_t, int64_t> TargetDims(const Json& m, const std::string& target) {
  const int64_t H = m["hidden_size"], I = m["intermediate_size"], nh = m["num_attention_heads"];
  const int64_t nkv = m.value("num_key_value_heads", nh);
  const int64_t hd = m.contains("head_dim") ? m["head_dim"].get<int64_t>() : H / nh;
  const std::string p = ModulePath(target);
  if (p == "self_attn.q_proj") return {nh * hd, H};
  if (p == "self_attn.k_proj" || p == "self_attn.v_proj") return {nkv * hd, H};
  if (p == "self_attn.o_proj") return {H, nh * hd};
  if (p == "mlp.down_proj") return {H, I};
  return {I, H};  // gate, up
}

int NumExperts(const Case& c) {
  int n = 0;
  for (int e : c.groups) n += e;
  return n;
}

// Random adapter tensors (nonzero B), under the contract's names.
std::vector<Named> RandomAdapter(const Case& c) {
  std::vector<Named> out;
  if (c.kind == "FULL") return out;
  std::vector<std::string> targets = c.targets;
  if (targets.empty()) targets.assign(std::begin(kTargetNames), std::end(kTargetNames));
  std::vector<int> layers = c.layers;
  if (layers.empty())
    for (int l = 0; l < c.model["num_hidden_layers"].get<int>(); ++l) layers.push_back(l);
  const int64_t experts = c.kind == "LORA" ? 1 : NumExperts(c);
  Rng rng(c.seed * 7919 + 17);
  auto fill = [&](std::vector<int64_t> shape, double std) {
    std::vector<double> v(shape[0] * shape[1]);
    for (double& x : v) x = std * rng.Normal();
    return v;
  };
  for (int l : layers) {
    for (const std::string& t : targets) {
      const std::string m = "model.layers." + std::to_string(l) + "." + ModulePath(t);
      auto [d_out, d_in] = TargetDims(c.model, t);
      std::vector<int64_t> a = {experts * c.rank, d_in}, b = {d_out, experts * c.rank};
      out.push_back({m + ".pmol.lora_A", a, fill(a, 1.0 / std::sqrt(double(d_in)))});
      out.push_back({m + ".pmol.lora_B", b, fill(b, 0.1)});
      if (c.kind == "PMOL") {
        std::vector<int64_t> r = {NumExperts(c) + c.empty, d_in};
        out.push_back({m + ".pmol.router", r, fill(r, 0.5)});
      }
    }
  }
  return out;
}

std::string RunTextproto(const Case& c, const std::string& model_dir) {
  std::ostringstream s;
  s.precision(17);
  s << "# " << c.name << "\n";
  s << "model { path: \"" << model_dir << "\" dtype: \"" << c.dtype << "\" threads: 2 }\n";
  s << "adapter {\n  kind: " << c.kind << "\n";
  if (c.kind == "PMOL") {
    if (c.groups_as_num) {
      s << "  num_groups: " << c.groups.size() << "\n";
      if (!c.minimal || c.groups[0] != 2) s << "  experts_per_group: " << c.groups[0] << "\n";
    } else {
      for (size_t k = 0; k < c.groups.size(); ++k)
        s << "  groups { name: \"" << kGroupNames[k] << "\" experts: " << c.groups[k] << " }\n";
    }
    if (!c.minimal || c.empty != 1) s << "  empty_experts: " << c.empty << "\n";
    if (!c.minimal || c.temperature != 1) s << "  router_temperature: " << c.temperature << "\n";
    if (!c.minimal || c.top_k != 0) s << "  top_k: " << c.top_k << "\n";
  }
  if (c.kind != "FULL") {
    if (!c.minimal || c.rank != 8) s << "  rank: " << c.rank << "\n";
    if (!c.minimal || c.alpha != 16) s << "  alpha: " << c.alpha << "\n";
    if (!c.minimal) s << "  dropout: 0\n";
  }
  for (const std::string& t : c.targets) s << "  target_modules: \"" << t << "\"\n";
  for (int l : c.layers) s << "  layers: " << l << "\n";
  s << "}\nobjective {\n  kind: " << c.objective << "\n";
  if (!c.minimal || c.loss != "SIGMOID") s << "  dpo_loss: " << c.loss << "\n";
  if (!c.minimal || c.beta != 0.1) s << "  beta: " << c.beta << "\n";
  if (!c.minimal || c.label_smoothing != 0) s << "  label_smoothing: " << c.label_smoothing << "\n";
  if (!c.minimal || c.ipo_norm) s << "  ipo_length_normalize: " << (c.ipo_norm ? "true" : "false") << "\n";
  if (!c.minimal || c.group_weight != 0.1) s << "  group_loss_weight: " << c.group_weight << "\n";
  if (!c.minimal || c.group_smoothing != 0.1)
    s << "  group_label_smoothing: " << c.group_smoothing << "\n";
  if (!c.minimal || c.balance_weight != 0.01)
    s << "  balance_loss_weight: " << c.balance_weight << "\n";
  s << "}\nseed: " << c.seed << "\n";
  return s.str();
}

// Runs the oracle on one job; the path of its output, or "" (and a test failure).
std::string RunOracle(const std::string& dir, const std::string& tag, const Json& job) {
  const std::string jobs = dir + "/" + tag + ".jobs.json";
  WriteText(jobs, Json::array({job}).dump(1));
  ProcessResult r = RunProcess({"/usr/bin/python3", "tests/oracles/torch_pmol.py", jobs});
  EXPECT_TRUE(r.ok()) << "oracle failed\n" << r.Describe();
  return r.ok() ? job["out"].get<std::string>() : "";
}

bool IsLoss(const std::string& name) { return name.rfind("loss/", 0) == 0; }
// Losses and the step's metrics (rewards/..., router/...): f32 scalars.
bool IsScalar(const std::string& name) {
  return IsLoss(name) || name.rfind("rewards/", 0) == 0 || name.rfind("router/", 0) == 0;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class GradsOracleTest : public ::testing::TestWithParam<Case> {};

TEST_P(GradsOracleTest, MatchesTorchOracle) {
  Case c = GetParam();
  const bool f64 = c.dtype == "f64";
  const std::string dir = TmpRoot() + "/grads_" + c.name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string model_dir = dir + "/model";
  WriteRandomModel(c.model.dump(), model_dir, /*seed=*/100 + c.seed, /*stddev=*/0.15);

  const int num_prefs = c.kind == "PMOL" ? static_cast<int>(c.groups.size()) : 1;
  std::vector<Pair> pairs = RandomPairs(c.pairs, c.model["vocab_size"], num_prefs, c.seed);
  const std::string adapter = dir + "/adapter.safetensors";
  const std::vector<Named> adapter_tensors = RandomAdapter(c);
  const bool with_adapter = c.kind != "FULL";
  if (with_adapter) WriteTensors(adapter, adapter_tensors, /*f32=*/!f64);
  const std::string config = dir + "/run.textproto", batch = dir + "/batch.json";
  auto write_inputs = [&] {
    WriteText(config, RunTextproto(c, model_dir));
    WriteText(batch, BatchJson(pairs).dump());
  };
  write_inputs();
  Json job = {{"config", config}, {"batch", batch}, {"adapter", with_adapter ? Json(adapter) : Json()},
              {"init", nullptr}, {"out", dir + "/oracle.safetensors"}};

  if (c.auto_hinge_beta) {
    // delta does not depend on beta. Orient the pairs so that the largest- and the
    // smallest-|delta| pairs have delta > 0 and the others delta < 0 (swapping chosen and
    // rejected flips delta's sign and leaves the aux losses unchanged), then put 1/beta
    // between the two positive deltas: one positive pair is active (0 < beta d < 1), one
    // inactive (beta d > 1), the negative ones active.
    Json probe = job;
    probe["out"] = dir + "/probe.safetensors";
    const std::string out = RunOracle(dir, "probe", probe);
    ASSERT_FALSE(out.empty());
    std::vector<double> delta = ReadAll(out).at("info/delta").values;
    ASSERT_EQ(delta.size(), pairs.size());
    std::vector<size_t> order(delta.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return std::fabs(delta[a]) < std::fabs(delta[b]); });
    for (size_t rank = 0; rank < order.size(); ++rank) {
      const size_t i = order[rank];
      const bool want_positive = rank == 0 || rank + 1 == order.size();
      if ((delta[i] > 0) != want_positive) {
        std::swap(pairs[i].chosen, pairs[i].rejected);
        delta[i] = -delta[i];
      }
    }
    const double lo = delta[order.front()], hi = delta[order.back()];
    c.beta = 2.0 / (lo + hi);
    for (double d : delta) {
      ASSERT_GT(std::fabs(1 - c.beta * d), 0.05) << "pair too close to the hinge kink: delta " << d;
    }
    write_inputs();
  }

  const std::string out = dir + "/pmol.safetensors";
  std::vector<std::string> args = {"launch/pmol", "grads", "--config=" + config, "--batch=" + batch,
                                   "--out=" + out};
  if (with_adapter) args.push_back("--adapter=" + adapter);
  ProcessResult run = RunProcess(args);
  if (c.objective != "DPO" && !run.ok() && run.term_signal == 0 &&
      run.stderr_text.find("objective.kind") != std::string::npos) {
    GTEST_SKIP() << "pmol grads does not support objective.kind " << c.objective
                 << " yet (this case is kept for when it does):\n" << run.stderr_text;
  }
  ASSERT_TRUE(run.ok()) << run.Describe();

  job["init"] = out;  // only for trainable tensors absent from the adapter (score.weight)
  const std::string oracle_out = RunOracle(dir, "oracle", job);
  ASSERT_FALSE(oracle_out.empty());
  const std::map<std::string, Stored> got = ReadAll(out), want = ReadAll(oracle_out);
  ASSERT_FALSE(got.empty());
  ASSERT_FALSE(want.empty());

  // Names: the oracle's trainable tensors, their gradients and the losses.
  std::set<std::string> expected;
  for (const auto& [name, s] : want)
    if (name.rfind("info/", 0) != 0) expected.insert(name);
  for (const std::string& name : expected) {
    if (!IsScalar(name)) {
      EXPECT_TRUE(got.count(name)) << "pmol's output lacks " << name;
    }
  }
  const std::string main_loss = c.objective == "DPO" ? "loss/dpo"
                                : c.objective == "SFT" ? "loss/sft" : "loss/reward";
  for (const std::string& l : {std::string("loss/total"), main_loss, std::string("loss/group"),
                               std::string("loss/balance")}) {
    EXPECT_TRUE(got.count(l)) << "pmol's output lacks " << l;
  }
  for (const auto& [name, s] : got) {
    EXPECT_TRUE(expected.count(name))
        << "pmol's output holds " << name << ", which the oracle does not know for this config";
  }

  const std::string compute = f64 ? "F64" : "F32";
  int compared = 0;
  std::pair<double, std::string> worst_grad{0, ""}, worst_scalar{0, ""};
  double max_rel = 0;  // worst gradient error relative to its tensor's max |oracle|
  for (const auto& [name, w] : want) {
    if (name.rfind("info/", 0) == 0) continue;
    auto it = got.find(name);
    if (it == got.end()) continue;
    const Stored& g = it->second;
    if (IsScalar(name)) {
      EXPECT_EQ(g.dtype, "F32") << name;
      EXPECT_TRUE(g.shape.empty()) << name << " is not a scalar";
      ASSERT_EQ(g.values.size(), 1u) << name;
      const double tol = f64 ? 1e-6 * std::fabs(w.values[0]) + 1e-12
                             : 1e-4 * std::fabs(w.values[0]) + 1e-6;
      const double err = std::fabs(g.values[0] - w.values[0]);
      EXPECT_LE(err, tol) << c.name << ": " << name << " pmol " << g.values[0] << " oracle "
                          << w.values[0];
      if (err / tol > worst_scalar.first) worst_scalar = {err / tol, name};
      ++compared;
      continue;
    }
    EXPECT_EQ(g.dtype, compute) << name;
    EXPECT_EQ(g.shape, w.shape) << name;
    if (g.values.size() != w.values.size()) continue;
    double max_ref = 0, worst = 0;
    size_t at = 0;
    for (double x : w.values) max_ref = std::max(max_ref, std::fabs(x));
    for (size_t i = 0; i < g.values.size(); ++i) {
      const double err = std::fabs(g.values[i] - w.values[i]);
      if (!(err <= worst)) worst = err, at = i;
    }
    const bool is_grad = name.rfind("grad/", 0) == 0;
    const double tol = !is_grad ? 0.0
                       : f64   ? 1e-9 * std::max(max_ref, 1e-6)
                               : 2e-4 * max_ref + 1e-9;
    EXPECT_LE(worst, tol) << c.name << ": " << name << " max err " << worst << " (relative to max|oracle| "
                          << worst / std::max(max_ref, 1e-300) << ") at flat index " << at << ": pmol "
                          << g.values[at] << " oracle " << w.values[at] << ", max|oracle| " << max_ref;
    if (is_grad) {
      if (worst / tol > worst_grad.first) worst_grad = {worst / tol, name};
      max_rel = std::max(max_rel, worst / std::max(max_ref, 1e-300));
    }
    ++compared;
  }
  // The gradients must not all be trivially zero (that would hide bugs).
  double grad_norm = 0;
  for (const auto& [name, w] : want)
    if (name.rfind("grad/", 0) == 0)
      for (double x : w.values) grad_norm += x * x;
  EXPECT_GT(grad_norm, 1e-12) << "oracle gradients are all zero";
  EXPECT_GT(compared, 4);
  std::printf("%-45s %3d tensors/scalars; worst gradient err/tol %.2g (%s), relative %.2g; "
              "worst scalar err/tol %.2g (%s)\n",
              c.name.c_str(), compared, worst_grad.first, worst_grad.second.c_str(), max_rel,
              worst_scalar.first, worst_scalar.second.c_str());
}

INSTANTIATE_TEST_SUITE_P(Configs, GradsOracleTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
}  // namespace pmol::grads_test
