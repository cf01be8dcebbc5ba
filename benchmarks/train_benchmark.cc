// PMoL-DPO training throughput on the CPU: pmol against a PyTorch peer
// (benchmarks/peers/torch_pmol_dpo_peer.py, float32, stacked experts, the way a PyTorch +
// PEFT user writes it) in one run, on the same ~20M-parameter Llama model
// (benchmarks/configs/llama_20m.json), the same adapter tensors, the same batch and the
// same thread count.
//
// One training step, both sides: ZeroGrads; policy forward + backward of the B pairs
// (chosen and rejected rows as one [2B, T] batch); the reference forward (adapters off,
// no gradient); L = L_dpo(sigmoid, beta) + 0.1 L_group + 0.01 L_bal (DESIGN.md section 1);
// global-norm clipping (max 1.0); AdamW (weight decay 0.01, routers excluded) with the
// cosine schedule's rate. pmol runs it as the trainer does: RunComponents from a RunConfig
// (PMoL, 3 groups x 2 experts + 1 empty, r = 8, alpha = 16, all seven targets, DPO
// sigmoid, beta 0.1), PreferenceStep::Run, ClipGradNorm, AdamW::Step(LearningRate(...)).
// Batch: B pairs of T tokens (prompt T/4, responses T - T/4, random ids, preference
// labels 0,1,2,0,...).
//
// Same start: this program writes the base model (HF folder) and pmol's initial adapter
// tensors (lora_B and the routers filled with random values so that the policy differs
// from the reference and the gates are not uniform) to --workdir; the peer loads both.
//
// Correctness before timing: for the first --check_steps steps both sides dump the losses,
// the pre-clip gradient norm and gradients, and the tensors after the update. Every one
// must agree within the tolerances below, else no ratio is printed (exit status 1):
//   losses (total, dpo, group, balance), grad norm, lr   |a - b| / |b|            <= 1e-4
//   gradients, worst tensor of each kind (A, B, router)  max|a-b| / max|b|        <= 1e-3
//   updates p_t - p_0, all tensors of a kind together    ||a - b||_2 / ||b||_2    <= 5e-3
// Why these: both sides compute in f32 in different orders. A third run of the peer in
// float64 (--check_f64) prints, next to every figure, pmol's and PyTorch-f32's distance
// to it; seen here (20M model, 2 steps): losses ~3e-6, gradients ~1e-5..7e-5, updates
// ~5e-4 for PyTorch-f32 (pmol is as close or closer), so each tolerance is 10-20x the
// f32 noise of PyTorch itself. Updates are compared in L2, not elementwise: AdamW's first
// steps move an element by ~lr * g / (|g| + eps), i.e. by about lr whatever |g| is, so the
// few elements (~50 in 1M) whose gradient is at the f32 noise level may move differently
// by up to ~lr on either side (the number differing by more than lr/100 is printed).
// What the checks resolve: anything that changes a loss by 1e-4, a gradient by 0.1% of
// its tensor's largest entry, or the updates by 0.5%; weight decay 0.01 moves a tensor by
// only ~0.1% of an update, so AdamW's decay itself is left to tests/optim.
//
// PyTorch runs in two thread environments, each its own process: "pytorch" (the
// comparison) with OPENBLAS_NUM_THREADS = threads and OMP_WAIT_POLICY = PASSIVE, and
// "pytorch-defaults" with torch.set_num_threads(threads) alone. Debian's torch runs GEMMs
// on OpenBLAS's own pthreads, which torch.set_num_threads does not limit, and the rest on
// OpenMP threads; with defaults both pools spin on the same cores and a 2-thread step
// takes about twice as long, so the defaults row is shown but the ratio that counts is
// against the tuned one (the stronger peer). pmol limits OpenBLAS to its thread count.
//
// Timing: --warmup steps, then --steps steps, interleaved step by step (pmol, PyTorch,
// PyTorch-defaults, with the order rotating every step; one process computes at a time).
// Each peer is a child process driven over pipes and times its own steps (zero_grad ..
// scheduler.step), so the pipe is not counted. Reported: median (and min, max) s/step,
// tokens/s with tokens = 2 B T (policy rows) per step, the ratios pmol/PyTorch of tokens/s
// (medians; and of the fastest steps, which contention from other processes affects
// least), the 1-minute load average, and peak RSS of each process: over the training
// steps (VmHWM reset after the check, read at the end) and over the whole process
// (ru_maxrss; pmol's includes writing the model).
//
// Usage (built optimised by .bazelrc):
//   bazel build //benchmarks:train_benchmark
//   ./bazel-bin/benchmarks/train_benchmark --threads=2 --steps=10 --warmup=2
// Flags: --threads (0: all cores) --batch --seq --steps --warmup --check_steps
//        --check_f64 --peer_defaults --profile --workdir --peer --python --hf_config
// --profile additionally times the phases of a step on every side (reference forward,
// policy step with the reference cached, clipping, AdamW, and the frozen model's forward
// and forward+backward without adapters) with wall clocks, since no profiler runs here.
#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "benchmarks/process_memory.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "pmol/core/rng.h"
#include "pmol/data/batching.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_model.h"
#include "pmol/optim/adamw.h"
#include "pmol/optim/grad_clip.h"
#include "pmol/optim/lr_schedule.h"
#include "pmol/train/run_components.h"
#include "proto/run_config_io.h"
#include "proto/run_config_validation.h"

DEFINE_int32(threads, 0, "threads for both pmol and PyTorch (0: all cores)");
DEFINE_int32(batch, 4, "preference pairs per step (2 x batch rows)");
DEFINE_int32(seq, 256, "tokens per row: prompt seq/4, responses the rest");
DEFINE_int32(steps, 10, "timed steps per implementation (interleaved)");
DEFINE_int32(warmup, 2, "untimed steps per implementation after the check");
DEFINE_int32(check_steps, 2, "steps whose losses, gradients and updates are compared");
DEFINE_bool(check_f64, true, "also run the peer in float64 during the check (f32 noise floor)");
DEFINE_bool(profile, false, "time the phases of a step on every side after the comparison");
DEFINE_bool(peer_defaults, true, "also time PyTorch with its default thread environment");
DEFINE_string(workdir, "/tmp/pmol-train-benchmark", "where the model, adapters and batch are written");
DEFINE_string(peer, "benchmarks/peers/torch_pmol_dpo_peer.py", "the PyTorch peer script");
DEFINE_string(python, "/usr/bin/python3", "the Python that has torch");
DEFINE_string(hf_config, "benchmarks/configs/llama_20m.json", "the model's HF config.json");

namespace pmol {
namespace {

constexpr double kLossTol = 1e-4, kGradTol = 1e-3, kUpdateTol = 5e-3;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = v.size() / 2;
  return v.size() % 2 ? v[k] : 0.5 * (v[k - 1] + v[k]);
}


// As nproc: the CPUs this process may run on.
int AvailableCpus() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

// The 1-minute load average (/proc/loadavg), for judging contention.
std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one;
  in >> one;
  return one.empty() ? "n/a" : one;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void FillRandom(Tensor& t, Rng& rng, double stddev) {
  std::vector<double> v(t.numel());
  for (double& x : v) x = stddev * rng.Normal();
  t.CopyFrom(Tensor::FromHost(v.data(), t.shape(), DType::kF64, t.backend()).ConvertTo(t.dtype()));
}

// max |a - b| / max |b| (b the reference).
double RelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  PMOL_CHECK(a.size() == b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// Relative L2 difference of two updates (p_after - p_before), accumulated over tensors,
// and the number of elements that differ by more than lr / 100.
struct UpdateDiff {
  double diff2 = 0, ref2 = 0;
  int64_t far = 0, count = 0;
  void Add(const std::vector<double>& a, const std::vector<double>& b, double lr) {
    PMOL_CHECK(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = a[i] - b[i];
      diff2 += d * d;
      ref2 += b[i] * b[i];
      far += std::abs(d) > 0.01 * lr ? 1 : 0;
    }
    count += static_cast<int64_t>(a.size());
  }
  double Rel() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2); }
};

double RelScalar(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// ---------------------------------------------------------------------------------------
// The peer as a child process: one command line in, one JSON line out.
class PeerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<PeerProcess>> Start(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) return absl::InternalError("pipe() failed");
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork() failed");
    if (pid == 0) {
      dup2(in[0], STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      close(in[0]);
      close(in[1]);
      close(out[0]);
      close(out[1]);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      std::perror(("train_benchmark: exec " + argv[0]).c_str());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    auto p = std::unique_ptr<PeerProcess>(new PeerProcess);
    p->pid_ = pid;
    p->to_ = fdopen(in[1], "w");
    p->from_ = fdopen(out[0], "r");
    absl::StatusOr<nlohmann::json> ready = p->ReadReply();
    if (!ready.ok()) return ready.status();
    p->hello_ = *ready;
    return p;
  }

  ~PeerProcess() {
    if (to_ != nullptr) fclose(to_);
    if (from_ != nullptr) fclose(from_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }

  const nlohmann::json& hello() const { return hello_; }

  absl::StatusOr<nlohmann::json> Call(const std::string& command) {
    if (std::fprintf(to_, "%s\n", command.c_str()) < 0 || std::fflush(to_) != 0)
      return absl::InternalError("peer: cannot write its stdin (did it exit?)");
    return ReadReply();
  }

 private:
  PeerProcess() = default;

  absl::StatusOr<nlohmann::json> ReadReply() {
    char* line = nullptr;
    size_t cap = 0;
    const ssize_t n = getline(&line, &cap, from_);
    std::string text = n > 0 ? std::string(line, n) : std::string();
    free(line);
    if (n <= 0) return absl::InternalError("peer: exited without answering (see its stderr above)");
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) return absl::InternalError("peer: answered a non-JSON line: " + text);
    if (j.contains("error")) return absl::InternalError("peer: " + j["error"].get<std::string>());
    return j;
  }

  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  nlohmann::json hello_;
};

// ---------------------------------------------------------------------------------------
// pmol's trainer pieces for this benchmark.
struct PmolTrainer {
  std::unique_ptr<RunComponents> run;
  std::unique_ptr<AdamW> adamw;
  LrScheduleOptions schedule;
  std::vector<Tensor> grads;
  data::PreferenceBatch batch;
  double max_grad_norm = 1.0;

  // What a checked step reports: losses, the pre-clip norm and gradients, the tensors
  // after the update (host copies, in TrainableParams order).
  struct Dump {
    double total = 0, dpo = 0, group = 0, balance = 0, grad_norm = 0, lr = 0;
    std::vector<std::vector<double>> grads, params;
  };

  // One training step; returns the loss. `dump` (may be null) receives the figures.
  double Step(Dump* dump) {
    run->ZeroGrads();
    run->adapters->SetTraining(true, run->config.seed(), adamw->step());
    StepMetrics m = run->step->Run(batch, 1.0).value();
    if (dump != nullptr)
      for (const Tensor& g : grads) dump->grads.push_back(g.ToDoubles());
    const double norm = ClipGradNorm(grads, max_grad_norm);
    const double lr = LearningRate(schedule, adamw->step());
    adamw->Step(lr);
    if (dump != nullptr) {
      dump->total = m.loss;
      dump->dpo = m.main;
      dump->group = m.group;
      dump->balance = m.balance;
      dump->grad_norm = norm;
      dump->lr = lr;
      for (auto& [name, p] : run->TrainableParams()) dump->params.push_back(p.ToDoubles());
    }
    return m.loss;
  }
};

// Medians of pmol's phases of a step, and of the frozen model alone (the peer's
// "profile" command measures the same phases), into profile["pmol/<phase>"].
void ProfilePmol(PmolTrainer& pm, int reps, std::map<std::string, double>* profile) {
  RunComponents& run = *pm.run;
  LlamaModel& model = *run.model;
  const data::PreferenceBatch& b = pm.batch;
  std::vector<int32_t> ids(b.chosen.input_ids.begin(), b.chosen.input_ids.end());
  ids.insert(ids.end(), b.rejected.input_ids.begin(), b.rejected.input_ids.end());
  const int64_t rows = 2 * b.num_pairs, T = b.chosen.seq_len;
  Tensor dlogits = Tensor::Zeros({rows, T, model.config().vocab_size}, DType::kF32, run.backend);
  std::map<std::string, std::vector<double>> t;
  for (int i = 0; i < reps; ++i) {
    run.ZeroGrads();
    auto t0 = std::chrono::steady_clock::now();
    auto ref = run.step->ReferenceLogProbs(b).value();
    t["reference"].push_back(Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    run.step->Run(b, 1.0, &ref).value();
    t["policy"].push_back(Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    ClipGradNorm(pm.grads, pm.max_grad_norm);
    t["clip"].push_back(Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    pm.adamw->Step(LearningRate(pm.schedule, pm.adamw->step()));
    t["adamw"].push_back(Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    model.Forward(ids, rows, T, nullptr, nullptr).value();
    t["frozen_fwd"].push_back(Seconds(t0));
    t0 = std::chrono::steady_clock::now();
    {
      ForwardState st;
      model.Forward(ids, rows, T, &st, nullptr).value();
      model.Backward(st, dlogits, nullptr);
    }
    t["frozen_fwd_bwd"].push_back(Seconds(t0));
  }
  for (auto& [k, v] : t) (*profile)["pmol/" + k] = Median(v);
}

std::string RunConfigText(const std::string& model_dir, int threads, int64_t total_steps) {
  return absl::StrCat(
      "model { path: \"", model_dir, "\" dtype: \"f32\" device: \"cpu\" threads: ", threads, " }\n",
      "adapter { kind: PMOL num_groups: 3 experts_per_group: 2 empty_experts: 1 rank: 8 "
      "alpha: 16 }\n",
      "objective { kind: DPO dpo_loss: SIGMOID beta: 0.1 group_loss_weight: 0.1 "
      "group_label_smoothing: 0.1 balance_loss_weight: 0.01 }\n",
      "optimizer { lr: 2e-4 beta1: 0.9 beta2: 0.999 eps: 1e-8 weight_decay: 0.01 "
      "decay_routers: false schedule: COSINE warmup_steps: 0 min_lr_ratio: 0 max_grad_norm: 1.0 "
      "max_steps: ", total_steps, " }\n",
      "seed: 1234\n");
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "train_benchmark: %s\n", what.c_str());
  return 1;
}

int Main() {
  const int threads = FLAGS_threads > 0 ? FLAGS_threads : AvailableCpus();
  if (FLAGS_batch <= 0 || FLAGS_seq < 8 || FLAGS_steps <= 0 || FLAGS_warmup < 0 || FLAGS_check_steps < 1)
    return Fail("need --batch > 0, --seq >= 8, --steps > 0, --warmup >= 0, --check_steps >= 1");
  const std::string model_dir = FLAGS_workdir + "/model";
  ::mkdir(FLAGS_workdir.c_str(), 0755);
  ::mkdir(model_dir.c_str(), 0755);

  // ---- The shared starting point: base model, adapter tensors, batch.
  absl::StatusOr<LlamaConfig> parsed = ReadHfConfig(FLAGS_hf_config);
  if (!parsed.ok()) return Fail(std::string(parsed.status().message()));
  const LlamaConfig& lc = *parsed;
  if (FLAGS_seq > lc.max_position_embeddings) return Fail("--seq exceeds max_position_embeddings");
  int64_t base_params = 0;
  {
    Backend* cpu = GetBackend(DeviceType::kCpu, threads).value();
    LlamaWeights w = InitLlamaWeights(lc, 7, 0.02, cpu, DType::kF32);
    absl::Status s = WriteSafetensors(model_dir + "/model.safetensors", NamedWeights(lc, w));
    if (!s.ok()) return Fail(std::string(s.message()));
    std::ofstream(model_dir + "/config.json") << lc.json;
    ForEachWeight(lc, w, [&](const WeightSlot& slot) { base_params += NumElements(slot.shape); });
  }
  malloc_trim(0);

  const int64_t total_steps = FLAGS_check_steps + FLAGS_warmup + FLAGS_steps;
  const std::string config_text = RunConfigText(model_dir, threads, total_steps);
  absl::StatusOr<config::RunConfig> config = config::ParseRunConfig(config_text, "<train_benchmark>");
  if (!config.ok()) return Fail(std::string(config.status().message()));
  if (absl::Status v = config::ValidateRunConfig(*config); !v.ok()) return Fail(std::string(v.message()));

  PmolTrainer pm;
  {
    absl::StatusOr<std::unique_ptr<RunComponents>> built = BuildRunComponents(*config, "");
    if (!built.ok()) return Fail(std::string(built.status().message()));
    pm.run = std::move(*built);
  }
  RunComponents& run = *pm.run;
  {
    Rng rng(13);
    for (AdaptedModule& am : run.adapters->modules()) {
      FillRandom(am.params.lora_B, rng, 0.02);
      FillRandom(am.params.router, rng, 0.1);  // gates far from uniform
    }
  }
  const std::string adapter_path = FLAGS_workdir + "/adapters.safetensors";
  if (absl::Status s = WriteSafetensors(adapter_path, run.TrainableParams()); !s.ok())
    return Fail(std::string(s.message()));

  const int32_t B = FLAGS_batch, T = FLAGS_seq, prompt = T / 4;
  data::PreferenceDataset dataset;
  {
    Rng rng(1);
    auto ids = [&](int n) {
      std::vector<int32_t> v(n);
      for (int32_t& id : v) id = static_cast<int32_t>(rng.NextU64() % lc.vocab_size);
      return v;
    };
    for (int32_t i = 0; i < B; ++i) {
      data::TokenizedPair p;
      p.prompt = ids(prompt);
      p.chosen = ids(T - prompt);
      p.rejected = ids(T - prompt);
      p.preference = i % 3;
      dataset.pairs.push_back(std::move(p));
    }
  }
  std::vector<int64_t> indices(B);
  for (int32_t i = 0; i < B; ++i) indices[i] = i;
  pm.batch = data::MakePaddedBatch(dataset, indices, B, T, /*pad_id=*/0);
  PMOL_CHECK(pm.batch.chosen.seq_len == T && pm.batch.num_pairs == B);
  for (int32_t t = 0; t < T; ++t) PMOL_CHECK(pm.batch.chosen.response_mask[t] == (t >= prompt ? 1 : 0));

  // ---- Optimizer and schedule, from the config.
  const config::OptimizerConfig& oc = config->optimizer();
  AdamWOptions ao;
  ao.lr = oc.lr();
  ao.beta1 = oc.beta1();
  ao.beta2 = oc.beta2();
  ao.eps = oc.eps();
  ao.weight_decay = oc.weight_decay();
  pm.adamw = std::make_unique<AdamW>(ao);
  {
    NamedTensors params = run.TrainableParams(), grads = run.TrainableGrads();
    for (size_t i = 0; i < params.size(); ++i) {
      absl::Status s = pm.adamw->AddParam(params[i].first, params[i].second, grads[i].second,
                                          run.Decays(params[i].first));
      if (!s.ok()) return Fail(std::string(s.message()));
      pm.grads.push_back(grads[i].second);
    }
  }
  pm.schedule.kind = LrScheduleOptions::kCosine;
  pm.schedule.lr = oc.lr();
  pm.schedule.warmup_steps = oc.warmup_steps();
  pm.schedule.total_steps = oc.max_steps();
  pm.schedule.min_lr_ratio = oc.min_lr_ratio();
  pm.max_grad_norm = oc.max_grad_norm();

  // ---- The peer's setup file.
  const std::string setup_path = FLAGS_workdir + "/setup.json";
  {
    nlohmann::json j;
    j["model_dir"] = model_dir;
    j["adapters"] = adapter_path;
    j["threads"] = threads;
    j["batch"] = B;
    j["seq"] = T;
    j["prompt_len"] = prompt;
    nlohmann::json chosen = nlohmann::json::array(), rejected = nlohmann::json::array();
    for (int32_t i = 0; i < B; ++i) {
      chosen.push_back(std::vector<int32_t>(pm.batch.chosen.input_ids.begin() + i * T,
                                            pm.batch.chosen.input_ids.begin() + (i + 1) * T));
      rejected.push_back(std::vector<int32_t>(pm.batch.rejected.input_ids.begin() + i * T,
                                              pm.batch.rejected.input_ids.begin() + (i + 1) * T));
    }
    j["chosen_ids"] = chosen;
    j["rejected_ids"] = rejected;
    j["preferences"] = pm.batch.preference;
    const AdapterOptions& ad = run.adapters->options();
    j["experts_per_group"] = ad.layout.experts_per_group;
    j["empty_experts"] = ad.layout.num_empty;
    j["rank"] = ad.layout.rank;
    j["alpha"] = ad.alpha;
    j["router_temperature"] = ad.temperature;
    const config::ObjectiveConfig& ob = config->objective();
    j["beta"] = ob.beta();
    j["group_loss_weight"] = ob.group_loss_weight();
    j["group_label_smoothing"] = ob.group_label_smoothing();
    j["balance_loss_weight"] = ob.balance_loss_weight();
    j["lr"] = oc.lr();
    j["beta1"] = oc.beta1();
    j["beta2"] = oc.beta2();
    j["eps"] = oc.eps();
    j["weight_decay"] = oc.weight_decay();
    j["decay_routers"] = oc.decay_routers();
    j["max_grad_norm"] = oc.max_grad_norm();
    j["schedule"] = "cosine";
    j["warmup_steps"] = oc.warmup_steps();
    j["total_steps"] = oc.max_steps();
    j["min_lr_ratio"] = oc.min_lr_ratio();
    std::ofstream(setup_path) << j.dump();
  }

  int64_t adapter_params = 0;
  for (auto& [name, t] : run.TrainableParams()) adapter_params += t.numel();
  std::printf("model: %.1fM parameters (hidden %lld, %lld layers, heads %lld/%lld, vocab %lld); "
              "PMoL: %zu adapted modules, %.2fM trainable parameters\n",
              base_params / 1e6, (long long)lc.hidden_size, (long long)lc.num_hidden_layers,
              (long long)lc.num_attention_heads, (long long)lc.num_key_value_heads,
              (long long)lc.vocab_size, run.adapters->modules().size(), adapter_params / 1e6);
  std::printf("batch: %d pairs x %d tokens (prompt %d + response %d), %d policy rows -> %lld tokens/step; "
              "%d threads each; pmol backend %s\n",
              B, T, prompt, T - prompt, 2 * B, 2LL * B * T, threads, run.backend->Name().c_str());
  std::printf("run config:\n%s", config_text.c_str());

  // ---- Peers: PyTorch tuned (the comparison), PyTorch with its defaults, f64 for the check.
  auto start_peer = [&](const char* dtype, const char* env) {
    return PeerProcess::Start({FLAGS_python, FLAGS_peer, setup_path, "--dtype", dtype, "--env", env});
  };
  absl::StatusOr<std::unique_ptr<PeerProcess>> peer = start_peer("float32", "tuned");
  if (!peer.ok()) return Fail(std::string(peer.status().message()));
  std::printf("peer: PyTorch %s, %d threads; RSS %.0f MB after importing torch, before loading\n",
              (*peer)->hello()["torch"].get<std::string>().c_str(), (*peer)->hello()["threads"].get<int>(),
              (*peer)->hello().value("rss_after_import_mb", -1.0));
  std::unique_ptr<PeerProcess> peer_defaults;
  if (FLAGS_peer_defaults) {
    absl::StatusOr<std::unique_ptr<PeerProcess>> p = start_peer("float32", "default");
    if (!p.ok()) return Fail(std::string(p.status().message()));
    peer_defaults = std::move(*p);
  }
  std::unique_ptr<PeerProcess> peer64;
  if (FLAGS_check_f64) {
    absl::StatusOr<std::unique_ptr<PeerProcess>> p = start_peer("float64", "tuned");
    if (!p.ok()) return Fail(std::string(p.status().message()));
    peer64 = std::move(*p);
  }

  // ---- Check.
  const NamedTensors names = run.TrainableParams();
  std::vector<std::vector<double>> initial;
  for (auto& [name, t] : names) initial.push_back(t.ToDoubles());
  bool agree = true;
  std::printf("\ncheck (pmol vs PyTorch f32%s): relative differences, tolerance in []\n",
              peer64 ? "; and against PyTorch f64: pmol / PyTorch-f32" : "");
  for (int s = 0; s < FLAGS_check_steps; ++s) {
    PmolTrainer::Dump mine;
    pm.Step(&mine);
    auto load_dump = [&](PeerProcess* p, const std::string& tag) -> std::shared_ptr<SafetensorsFile> {
      const std::string path = absl::StrCat(FLAGS_workdir, "/peer_", tag, "_step", s + 1, ".safetensors");
      absl::StatusOr<nlohmann::json> r = p->Call("dump " + path);
      if (!r.ok()) {
        std::fprintf(stderr, "train_benchmark: %s\n", std::string(r.status().message()).c_str());
        return nullptr;
      }
      absl::StatusOr<std::shared_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
      if (!f.ok()) {
        std::fprintf(stderr, "train_benchmark: %s\n", std::string(f.status().message()).c_str());
        return nullptr;
      }
      return *f;
    };
    std::shared_ptr<SafetensorsFile> theirs = load_dump(peer->get(), "f32");
    std::shared_ptr<SafetensorsFile> exact = peer64 ? load_dump(peer64.get(), "f64") : nullptr;
    if (theirs == nullptr || (peer64 && exact == nullptr)) return Fail("peer dump failed");
    Backend* cpu = run.backend;
    auto get = [&](const std::shared_ptr<SafetensorsFile>& f, const std::string& name) {
      return f->Load(name, cpu, DType::kF64).value().ToDoubles();
    };
    auto scalar = [&](const std::shared_ptr<SafetensorsFile>& f, const std::string& name) {
      return get(f, name)[0];
    };
    std::printf("step %d (lr %.6g): loss pmol %.8f  PyTorch %.8f", s + 1, mine.lr, mine.total,
                scalar(theirs, "loss/total"));
    if (exact) std::printf("  PyTorch-f64 %.8f", scalar(exact, "loss/total"));
    std::printf("\n");
    auto report = [&](const std::string& what, double d, double d64a, double d64b, double tol) {
      const bool ok = d <= tol && std::isfinite(d);
      agree = agree && ok;
      std::printf("  %-22s %.2e [%.0e] %s", what.c_str(), d, tol, ok ? "ok  " : "FAIL");
      if (exact) std::printf("   vs f64: %.2e / %.2e", d64a, d64b);
      std::printf("\n");
    };
    const std::pair<const char*, double> scalars[] = {
        {"loss/total", mine.total}, {"loss/dpo", mine.dpo}, {"loss/group", mine.group},
        {"loss/balance", mine.balance}, {"grad_norm", mine.grad_norm}, {"lr", mine.lr}};
    for (const auto& [name, v] : scalars) {
      const double b = scalar(theirs, name);
      report(name, RelScalar(v, b), exact ? RelScalar(v, scalar(exact, name)) : 0,
             exact ? RelScalar(b, scalar(exact, name)) : 0, kLossTol);
    }
    // Gradients: worst per-tensor difference by tensor kind. Updates: relative L2 over all
    // tensors of the kind, and how many elements differ by more than lr/100.
    for (const char* kind : {"lora_A", "lora_B", "router"}) {
      const size_t kl = std::strlen(kind);
      double g = 0, g64a = 0, g64b = 0;
      UpdateDiff u, u64a, u64b;
      for (size_t i = 0; i < names.size(); ++i) {
        const std::string& n = names[i].first;
        if (n.size() < kl || n.compare(n.size() - kl, kl, kind) != 0) continue;
        const std::vector<double> tg = get(theirs, "grad/" + n);
        g = std::max(g, RelDiff(mine.grads[i], tg));
        auto update = [&](const std::vector<double>& after) {
          std::vector<double> d(after.size());
          for (size_t k = 0; k < d.size(); ++k) d[k] = after[k] - initial[i][k];
          return d;
        };
        const std::vector<double> um = update(mine.params[i]), ut = update(get(theirs, n));
        u.Add(um, ut, mine.lr);
        if (exact) {
          const std::vector<double> eg = get(exact, "grad/" + n), eu = update(get(exact, n));
          g64a = std::max(g64a, RelDiff(mine.grads[i], eg));
          g64b = std::max(g64b, RelDiff(tg, eg));
          u64a.Add(um, eu, mine.lr);
          u64b.Add(ut, eu, mine.lr);
        }
      }
      report(absl::StrCat("grad ", kind), g, g64a, g64b, kGradTol);
      report(absl::StrCat("update ", kind), u.Rel(), u64a.Rel(), u64b.Rel(), kUpdateTol);
      std::printf("  %-22s %lld of %lld elements   vs f64: %lld / %lld\n", "  |diff| > lr/100",
                  (long long)u.far, (long long)u.count, (long long)u64a.far, (long long)u64b.far);
    }
  }
  if (peer64) {
    peer64->Call("quit").IgnoreError();
    peer64.reset();
  }
  if (!agree) {
    (*peer)->Call("quit").IgnoreError();
    std::printf("\npmol and the PyTorch peer DISAGREE: no ratio is reported.\n");
    return 1;
  }
  std::printf("pmol and PyTorch agree.\n");

  // ---- Timing, interleaved step by step; the order rotates every step.
  struct Timed {
    std::string name;
    PeerProcess* peer = nullptr;  // null: pmol
    std::vector<double> seconds;
    double last_loss = 0, last_s = 0, peak_train_mb = -1, peak_all_mb = -1;
  };
  std::vector<Timed> impls = {{"pmol"}, {"pytorch"}};
  impls[1].peer = peer->get();
  if (peer_defaults) {
    impls.push_back({"pytorch-defaults"});
    impls.back().peer = peer_defaults.get();
    // The defaults peer has not trained yet: bring it to the same step as the others
    // (its losses are then comparable; it is not part of the check).
    for (int s = 0; s < FLAGS_check_steps; ++s)
      if (!peer_defaults->Call("step").ok()) return Fail("peer (defaults) step failed");
  }
  malloc_trim(0);
  const bool rss_ok = ResetPeakRss();
  for (Timed& t : impls) {
    if (t.peer == nullptr) continue;
    absl::StatusOr<nlohmann::json> r = t.peer->Call("reset_peak");
    if (!r.ok() || !(*r)["reset"].get<bool>()) std::printf("(%s: VmHWM could not be reset)\n", t.name.c_str());
  }
  const std::string load_before = LoadAverage();
  for (int i = 0; i < FLAGS_warmup + FLAGS_steps; ++i) {
    const bool timed = i >= FLAGS_warmup;
    for (size_t k = 0; k < impls.size(); ++k) {
      Timed& t = impls[(i + k) % impls.size()];
      if (t.peer == nullptr) {
        const auto t0 = std::chrono::steady_clock::now();
        t.last_loss = pm.Step(nullptr);
        t.last_s = Seconds(t0);
      } else {
        absl::StatusOr<nlohmann::json> r = t.peer->Call("step");
        if (!r.ok()) return Fail(t.name + " step failed: " + std::string(r.status().message()));
        t.last_loss = (*r)["loss"].get<double>();
        t.last_s = (*r)["seconds"].get<double>();
      }
      if (timed) t.seconds.push_back(t.last_s);
    }
    std::printf("  step %d%s:", i + 1, timed ? "" : " (warm-up)");
    for (const Timed& t : impls) std::printf("  %s %.3f s (loss %.6f)", t.name.c_str(), t.last_s, t.last_loss);
    std::printf("\n");
    std::fflush(stdout);
  }
  const std::string load_after = LoadAverage();
  for (Timed& t : impls) {  // peaks now, before the profile
    if (t.peer == nullptr) {
      t.peak_train_mb = rss_ok ? ProcStatusKb("VmHWM") / 1024.0 : -1;
      struct rusage ru;
      getrusage(RUSAGE_SELF, &ru);
      t.peak_all_mb = ru.ru_maxrss / 1024.0;
    } else {
      absl::StatusOr<nlohmann::json> r = t.peer->Call("peak");
      if (!r.ok()) return Fail(t.name + " peak failed");
      t.peak_train_mb = r->value("peak_train_rss_mb", -1.0);
      t.peak_all_mb = (*r)["peak_rss_mb"].get<double>();
    }
  }

  std::map<std::string, double> profile;  // "<impl>/<phase>" -> median seconds
  if (FLAGS_profile) {
    const int reps = std::max(3, FLAGS_steps / 2);
    for (Timed& t : impls) {
      if (t.peer == nullptr) continue;
      absl::StatusOr<nlohmann::json> r = t.peer->Call(absl::StrCat("profile ", reps));
      if (!r.ok()) return Fail(t.name + " profile failed");
      for (auto& [k, v] : r->items()) profile[t.name + "/" + k] = v.get<double>();
    }
    ProfilePmol(pm, reps, &profile);
  }

  for (Timed& t : impls)
    if (t.peer != nullptr) t.peer->Call("quit").IgnoreError();
  peer->reset();
  peer_defaults.reset();

  const double tok = 2.0 * B * T;
  auto mn = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  auto mx = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  std::printf("\nmedian of %d interleaved steps after %d warm-up steps (tokens = 2 x %d x %d per step)\n",
              FLAGS_steps, FLAGS_warmup, B, T);
  std::printf("%-17s %8s %8s %8s %9s %15s %17s\n", "impl", "s/step", "min", "max", "tokens/s",
              "peak RSS train", "peak RSS process");
  for (const Timed& t : impls)
    std::printf("%-17s %8.3f %8.3f %8.3f %9.0f %12.0f MB %14.0f MB\n", t.name.c_str(), Median(t.seconds),
                mn(t.seconds), mx(t.seconds), tok / Median(t.seconds), t.peak_train_mb, t.peak_all_mb);
  for (size_t k = 1; k < impls.size(); ++k)
    std::printf("speed ratio pmol/%s (tokens/s, medians): %.2fx   (fastest steps: %.2fx)\n",
                impls[k].name.c_str(), Median(impls[k].seconds) / Median(impls[0].seconds),
                mn(impls[k].seconds) / mn(impls[0].seconds));
  std::printf("pytorch: OPENBLAS_NUM_THREADS=%d OMP_WAIT_POLICY=PASSIVE + torch.set_num_threads(%d); "
              "pytorch-defaults: torch.set_num_threads(%d) only%s\n", threads, threads, threads,
              threads < AvailableCpus() ? " (its GEMMs then use OpenBLAS's default: every core)" : "");
  std::printf("1-min load average at start / end of timing: %s / %s (this run alone adds about %d; "
              "more means other processes shared the %d CPUs)\n",
              load_before.c_str(), load_after.c_str(), threads, threads);
  if (!rss_ok) std::printf("(peak RSS train: /proc/self/clear_refs not writable; n/a)\n");

  if (FLAGS_profile) {
    std::printf("\nphases (median of %d repetitions, wall clock, seconds)\n%-40s", std::max(3, FLAGS_steps / 2), "");
    for (const Timed& t : impls) std::printf(" %17s", t.name.c_str());
    std::printf("\n");
    const std::pair<const char*, const char*> phases[] = {
        {"reference", "reference forward + log-probs"},
        {"policy", "policy fwd + losses + bwd (ref cached)"},
        {"clip", "clip grad norm"},
        {"adamw", "AdamW step"},
        {"frozen_fwd", "base model alone: forward"},
        {"frozen_fwd_bwd", "base model alone: fwd + bwd to x0"}};
    for (const auto& [key, label] : phases) {
      std::printf("%-40s", label);
      for (const Timed& t : impls) {
        auto it = profile.find(t.name + "/" + key);
        std::printf(" %17.4f", it == profile.end() ? -1.0 : it->second);
      }
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace
}  // namespace pmol

int main(int argc, char** argv) {
  gflags::SetUsageMessage("pmol vs PyTorch: PMoL-DPO training steps per second on the CPU");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pmol::Main();
}
