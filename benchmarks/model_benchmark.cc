// Forward + backward throughput of a ~20M-parameter Llama model on the CPU, pmol against
// a PyTorch peer (benchmarks/peers/torch_llama_peer.py) measured in the same run, same
// weights, same batch, same thread count. Reports tokens/s, achieved GFLOP/s, peak RSS
// and the pmol/PyTorch speed ratio, for two modes:
//   frozen: gradient at the embedding output only (what adapter training needs)
//   full:   plus every weight's gradient (full fine-tuning)
// FLOP model (multiply-add = 2): forward = 2 N P_mm + 2 B Hq D T^2 (causal half of 4 B Hq D T^2),
// where P_mm counts parameters in matrices used by GEMMs (not the embedding gather);
// frozen backward = forward matmuls once more + attention x2; full = matmuls twice + attention x2.
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "pmol/core/rng.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_model.h"

DEFINE_int32(threads, 2, "threads for both pmol and PyTorch");
DEFINE_int32(batch, 4, "sequences per step");
DEFINE_int32(seq, 256, "tokens per sequence");
DEFINE_int32(steps, 3, "timed steps (after one warm-up step)");
DEFINE_string(modes, "frozen,full", "comma-separated: frozen, full");
DEFINE_string(workdir, "/tmp/pmol-model-benchmark", "where the generated model is written");
DEFINE_string(peer, "benchmarks/peers/torch_llama_peer.py", "PyTorch peer script ('' to skip)");
DEFINE_bool(recompute, false, "pmol: activation recompute");
DEFINE_string(hf_config, "benchmarks/configs/llama_20m.json", "the model's HF config.json");

namespace pmol {
namespace {

double Flops(const LlamaConfig& c, int64_t b, int64_t t, bool full) {
  const double n = static_cast<double>(b * t);
  const double per_layer = c.hidden_size * (c.q_dim() * 2.0 + c.kv_dim() * 2.0) +
                           3.0 * c.hidden_size * c.intermediate_size;
  const double mm = c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size;
  const double attn = 2.0 * b * c.num_attention_heads * c.head_dim * static_cast<double>(t) * t *
                      c.num_hidden_layers;
  const double fwd = 2.0 * n * mm + attn;
  return fwd + (full ? 4.0 : 2.0) * n * mm + 2.0 * attn;
}

double PeakRssMb() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

struct Result {
  double tokens_per_s = 0, seconds = 0, peak_mb = 0;
};

Result TimePmol(const std::string& dir, bool full) {
  Backend* cpu = GetBackend(DeviceType::kCpu, FLAGS_threads).value();
  LlamaModel model = LlamaModel::Load(dir, cpu, DType::kF32).value();
  model.set_recompute_activations(FLAGS_recompute);
  const LlamaConfig& c = model.config();
  Rng rng(1);
  std::vector<int32_t> ids(FLAGS_batch * FLAGS_seq);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.NextU64() % c.vocab_size);
  std::vector<float> ct(ids.size() * c.vocab_size);
  for (float& v : ct) v = static_cast<float>(rng.Normal());
  Tensor cot = Tensor::FromHost(ct.data(), {FLAGS_batch, FLAGS_seq, c.vocab_size}, DType::kF32, cpu);
  auto step = [&]() {
    ForwardState state;
    model.Forward(ids, FLAGS_batch, FLAGS_seq, &state).value();
    if (full) {
      LlamaWeights grads = ZerosLikeWeights(c, cpu, DType::kF32);
      model.Backward(state, cot, &grads);
    } else {
      model.Backward(state, cot, nullptr);
    }
  };
  step();
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < FLAGS_steps; ++i) step();
  Result r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / FLAGS_steps;
  r.tokens_per_s = FLAGS_batch * FLAGS_seq / r.seconds;
  r.peak_mb = PeakRssMb();
  return r;
}

bool RunPeer(const std::string& dir, const std::string& mode, Result* r) {
  const std::string cmd = "/usr/bin/python3 " + FLAGS_peer + " " + dir + " " +
                          std::to_string(FLAGS_batch) + " " + std::to_string(FLAGS_seq) + " " +
                          std::to_string(FLAGS_threads) + " " + std::to_string(FLAGS_steps) + " " + mode;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return false;
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) out += buf;
  if (pclose(p) != 0) return false;
  nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) return false;
  r->tokens_per_s = j["tokens_per_s"];
  r->seconds = j["seconds_per_step"];
  r->peak_mb = j["peak_rss_mb"];
  return true;
}

int Main() {
  ::mkdir(FLAGS_workdir.c_str(), 0755);
  absl::StatusOr<LlamaConfig> parsed = ReadHfConfig(FLAGS_hf_config);
  if (!parsed.ok()) {
    std::fprintf(stderr, "model_benchmark: %s\n", std::string(parsed.status().message()).c_str());
    return 1;
  }
  const LlamaConfig& config = *parsed;
  Backend* cpu = GetBackend(DeviceType::kCpu, FLAGS_threads).value();
  {
    LlamaWeights w = InitLlamaWeights(config, 7, 0.02, cpu, DType::kF32);
    if (!WriteSafetensors(FLAGS_workdir + "/model.safetensors", NamedWeights(config, w)).ok()) return 1;
    std::ofstream(FLAGS_workdir + "/config.json") << config.json;
  }
  int64_t params = 0;
  LlamaWeights shapes;
  ForEachWeight(config, shapes, [&](const WeightSlot& s) { params += NumElements(s.shape); });
  std::printf("model: %.1fM parameters (hidden %lld, %lld layers, heads %lld/%lld, vocab %lld); "
              "batch %d x %d tokens; %d threads\n",
              params / 1e6, (long long)config.hidden_size, (long long)config.num_hidden_layers,
              (long long)config.num_attention_heads, (long long)config.num_key_value_heads,
              (long long)config.vocab_size, FLAGS_batch, FLAGS_seq, FLAGS_threads);
  std::printf("%-8s %-8s %12s %10s %10s %12s\n", "mode", "impl", "tokens/s", "GFLOP/s", "s/step", "peak RSS MB");
  for (const std::string mode : {"frozen", "full"}) {
    if (FLAGS_modes.find(mode) == std::string::npos) continue;
    const bool full = mode == "full";
    const double flops = Flops(config, FLAGS_batch, FLAGS_seq, full);
    Result mine = TimePmol(FLAGS_workdir, full);
    std::printf("%-8s %-8s %12.0f %10.1f %10.3f %12.0f\n", mode.c_str(), "pmol", mine.tokens_per_s,
                flops / mine.seconds / 1e9, mine.seconds, mine.peak_mb);
    Result peer;
    if (!FLAGS_peer.empty() && RunPeer(FLAGS_workdir, mode, &peer)) {
      std::printf("%-8s %-8s %12.0f %10.1f %10.3f %12.0f\n", mode.c_str(), "pytorch", peer.tokens_per_s,
                  flops / peer.seconds / 1e9, peer.seconds, peer.peak_mb);
      std::printf("%-8s speed ratio pmol/pytorch: %.2fx\n", mode.c_str(), mine.tokens_per_s / peer.tokens_per_s);
    } else if (!FLAGS_peer.empty()) {
      std::printf("%-8s pytorch peer failed to run (%s)\n", mode.c_str(), FLAGS_peer.c_str());
    }
    std::fflush(stdout);
  }
  std::printf("(peak RSS of pmol is of this whole process, cumulative over modes; PyTorch's is per run)\n");
  return 0;
}

}  // namespace
}  // namespace pmol

int main(int argc, char** argv) {
  gflags::SetUsageMessage("pmol vs PyTorch: Llama forward+backward tokens/s on the CPU");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pmol::Main();
}
