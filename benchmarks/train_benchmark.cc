// PMoL-DPO training throughput: pmol against a PyTorch peer
// (benchmarks/peers/torch_pmol_dpo_peer.py, stacked experts, the way a PyTorch + PEFT user
// writes it) in one run, on the same model, the same adapter tensors and the same batch.
//   --device=cpu (default): the ~20M-parameter Llama of benchmarks/configs/llama_20m.json,
//     4 pairs x 256 tokens, the same thread count on both sides.
//   --device=cuda: one GPU; by default a randomly initialised Qwen2.5-0.5B-shaped model
//     (benchmarks/configs/qwen2_5_0_5b.json: 24 layers, hidden 896, q/k/v biases, tied
//     151936-token embedding), 4 pairs x 1024 tokens, 3 warm-up steps.
//
// One training step, both sides: ZeroGrads; policy forward + backward of the B pairs
// (chosen and rejected rows as one [2B, T] batch); the reference forward (adapters off,
// no gradient); L = L_dpo(sigmoid, beta) + 0.1 L_group + 0.01 L_bal (DESIGN.md section 1);
// global-norm clipping (max 1.0); AdamW (weight decay 0.01, routers excluded) with the
// cosine schedule's rate. pmol runs it as the trainer does: RunComponents from a RunConfig
// (PMoL, 3 groups x 2 experts + 1 empty, r = 8, alpha = 16, all seven targets, DPO
// sigmoid, beta 0.1, model.device = --device), PreferenceStep::Run, ClipGradNorm,
// AdamW::Step(LearningRate(...)). Batch: B pairs of T tokens (prompt T/4, responses
// T - T/4, random ids, preference labels 0,1,2,0,...). pmol runs each pair as one row with
// the prompt computed once (objective.share_prompt, the default; --share_prompt=false for
// two rows per pair like the peer); the FLOP count below is that of two rows per pair,
// the work both sides deliver.
//
// Same start: this program writes the base model (HF folder; linear biases, where the
// config has them, random rather than HF's zeros so that they count) and pmol's initial
// adapter tensors (lora_B and the routers filled with random values so that the policy
// differs from the reference and the gates are not uniform) to --workdir; the peer loads
// both.
//
// Correctness before timing: for the first --check_steps steps both sides dump the losses,
// the pre-clip gradient norm and gradients, and the tensors after the update. Every one
// must agree within the tolerances below, else no ratio is printed (exit status 1):
//   losses (total, dpo, group, balance), grad norm, lr   |a - b| / |b|            <= 1e-4
//   gradients, worst tensor of each kind (A, B, router)  max|a-b| / max|b|        <= 1e-3
//   updates p_t - p_0, all tensors of a kind together    ||a - b||_2 / ||b||_2    <= 5e-3
// The checked peer is PyTorch in float32 with full-precision GEMMs (no TF32), as pmol.
// Why these: both sides compute in f32 in different orders. A run of the peer in float64
// (--check_f64; it runs its check steps first, alone, then exits) prints, next to every
// figure, pmol's and PyTorch-f32's distance to it; seen on the CPU (20M model, 2 steps):
// losses ~3e-6, gradients ~1e-5..7e-5, updates ~5e-4 for PyTorch-f32 (pmol is as close or
// closer), so each tolerance is 10-20x the f32 noise of PyTorch itself. Updates are
// compared in L2, not elementwise: AdamW's first steps move an element by
// ~lr * g / (|g| + eps), i.e. by about lr whatever |g| is, so the few elements (~50 in 1M)
// whose gradient is at the f32 noise level may move differently by up to ~lr on either
// side (the number differing by more than lr/100 is printed). What the checks resolve:
// anything that changes a loss by 1e-4, a gradient by 0.1% of its tensor's largest entry,
// or the updates by 0.5%; weight decay 0.01 moves a tensor by only ~0.1% of an update, so
// AdamW's decay itself is left to tests/optim.
//
// Rows, each peer its own process (a row other than the checked "pytorch" that fails to
// start or to step prints its error and is dropped; the run goes on):
//   pmol                  float32 (the checked one)
//   pmol-bf16             (--pmol_bf16; default on cuda) bf16 mixed precision: bf16 frozen
//                         base, activations and adapter working copies; f32 statistics,
//                         gradients, master weights and AdamW (model.dtype "bf16"); starts
//                         from the same adapters, catches up the check steps untimed and
//                         prints its losses there next to the f32 ones. On cpu it shares
//                         pmol's process, so its RSS figures are the process's.
//   pytorch               float32, eager (the checked one); attention F.scaled_dot_product_
//                         attention(is_causal=True) on PyTorch >= 2, else matmul + mask +
//                         softmax (Debian's torch 1.13 here)
//   pytorch-defaults      (cpu, --peer_defaults) the same with PyTorch's default threads
//   pytorch-bf16          (--bf16; default on cuda) bf16 autocast, bf16 frozen base, f32
//                         adapters and AdamW, eager
//   pytorch-bf16-compile  (--compile; default on cuda) the same under torch.compile
// The bf16 rows are timed, not checked (pmol's bf16 step has its own test against f32,
// tests/train/preference_step_test.cc): their gradients differ from f32 ones by bf16
// rounding, far beyond the tolerances above.
// Thread environments (cpu): "pytorch" runs with OPENBLAS_NUM_THREADS = threads and
// OMP_WAIT_POLICY = PASSIVE, "pytorch-defaults" with torch.set_num_threads(threads) alone.
// Debian's torch runs GEMMs on OpenBLAS's own pthreads, which torch.set_num_threads does
// not limit, and the rest on OpenMP threads; with defaults both pools spin on the same
// cores and a 2-thread step takes about twice as long, so the defaults row is shown but
// the ratio that counts is against the tuned one (the stronger peer). pmol limits
// OpenBLAS to its thread count. On cuda there is no such row.
//
// Timing: --warmup steps, then --steps steps. cpu: interleaved step by step (the order
// rotating every step; one process computes at a time). cuda: one implementation after
// another (each peer, started before its steps and ended after them, then pmol), so that
// one implementation at a time holds a step's activations on the GPU (in the check, pmol
// hands its pool's cached memory back with Backend::ReleaseCachedMemory() after each
// step, the peer its cache with torch.cuda.empty_cache()); each step starts and ends
// synchronised with the GPU (pmol: Backend::Synchronize(); the peer:
// torch.cuda.synchronize()). Each peer times its own steps (zero_grad ..
// scheduler.step), so the pipe is not counted. Reported: median (and min, max) s/step,
// tokens/s with tokens = 2 B T (policy rows) per step, model TFLOP/s (below) and on cuda
// MFU = TFLOP/s / --peak_tflops, the ratios pmol/peer of tokens/s (medians; and of the
// fastest steps). Memory over the timed steps: cpu: peak RSS (VmHWM reset before them)
// and over the whole process (ru_maxrss; pmol's includes writing the model), with the
// 1-minute load average; cuda: peak device memory, pmol's
// Backend::GetMemoryStats().peak_in_use_bytes after ResetPeakMemory() and PyTorch's
// torch.cuda.max_memory_allocated() after torch.cuda.reset_peak_memory_stats().
//
// Model FLOPs per step (StepFlops; GEMM multiply-adds x 2, the count pmol computes; norms,
// RoPE, softmaxes, element-wise products and bias adds not counted). N = 2 B T tokens,
// M = positions whose logits score a response token (2 B (T - T/4)), L layers, H hidden,
// I intermediate, Q = heads x head_dim, KV = kv_heads x head_dim, V vocabulary, P_ad
// trainable adapter parameters (routers, lora_A, lora_B). One forward pass of each part:
//   F_lin  = 2 N L (H Q + 2 H KV + Q H + 3 H I)   frozen q, k, v, o, gate, up, down
//   F_head = 2 M H V                              the LM head at the M positions only
//                                                 (LlamaModel::HeadAt)
//   F_attn = 2 L 2B T^2 Q                         q k^T and p v, causal: 2 GEMMs x 2 x
//                                                 T^2/2 x Q per row and layer
//   F_ad   = 2 N P_ad                             the router, A and B GEMMs
// Step = reference forward (F_lin + F_head + F_attn) + policy forward (the same + F_ad)
// + policy backward (frozen weights: input gradients only, 1x; attention 2x; adapters:
// input and weight gradients, 2x) = 3 F_lin + 3 F_head + 4 F_attn + 3 F_ad. The peer
// computes its LM head at all N positions (HF's logits), 3 x 2 (N - M) H V more; that work
// is not counted, so both sides get the same count and the MFU ratio is the speed ratio.
//
// Usage (built optimised by .bazelrc; run from the repository root):
//   bazel build //benchmarks:train_benchmark
//   ./bazel-bin/benchmarks/train_benchmark --threads=2 --steps=10 --warmup=2
//   on a GPU machine: benchmarks/gpu_train_benchmark.sh (pack here, run there)
// Flags: --device --threads (0: all cores) --batch --seq --steps --warmup --check_steps
//        --check_f64 --peer_defaults --bf16 --compile --pmol_bf16 --peak_tflops --profile
//        --workdir
//        --peer --python --hf_config
// --profile additionally times the phases of a step on every side (reference forward,
// policy step with the reference cached, clipping, AdamW, and the frozen model's forward
// and forward+backward without adapters) with wall clocks (synchronised on cuda).
#include <malloc.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
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
#include "pmol/core/status.h"
#include "pmol/data/batching.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_model.h"
#include "pmol/optim/adamw.h"
#include "pmol/optim/grad_clip.h"
#include "pmol/optim/lr_schedule.h"
#include "pmol/train/run_components.h"
#include "proto/run_config_io.h"
#include "proto/run_config_validation.h"

DEFINE_string(device, "cpu", "cpu or cuda: pmol's model.device and the peer's device");
DEFINE_int32(threads, 0, "CPU threads for both pmol and PyTorch (0: all cores)");
DEFINE_int32(batch, 4, "preference pairs per step (2 x batch rows)");
DEFINE_int32(seq, 256, "tokens per row: prompt seq/4, responses the rest (cuda default: 1024)");
DEFINE_int32(steps, 10, "timed steps per implementation");
DEFINE_int32(warmup, 2, "untimed steps per implementation after the check (cuda default: 3)");
DEFINE_int32(check_steps, 2, "steps whose losses, gradients and updates are compared");
DEFINE_bool(check_f64, true,
            "also run the peer in float64 for the check (f32 noise floor; cuda default: off, "
            "it needs about twice the f32 peer's GPU memory)");
DEFINE_bool(profile, false, "time the phases of a step on every side after the comparison");
DEFINE_bool(share_prompt, true,
            "pmol's objective.share_prompt: one row per pair, the prompt computed once (the "
            "peer runs two rows per pair, as TRL does)");
DEFINE_bool(peer_defaults, true, "also time PyTorch with its default thread environment (cpu only)");
DEFINE_bool(bf16, false, "also time PyTorch in bf16 mixed precision (cuda default: on)");
DEFINE_bool(compile, false, "also time PyTorch bf16 under torch.compile (cuda default: on)");
DEFINE_bool(pmol_bf16, false, "also time pmol in bf16 mixed precision (cuda default: on)");
DEFINE_double(peak_tflops, 989.4,
              "peak for MFU on cuda, TFLOP/s (default: H100 SXM dense BF16 tensor cores)");
DEFINE_string(workdir, "/tmp/pmol-train-benchmark", "where the model, adapters and batch are written");
DEFINE_string(peer, "benchmarks/peers/torch_pmol_dpo_peer.py", "the PyTorch peer script");
DEFINE_string(python, "/usr/bin/python3", "the Python that has torch");
DEFINE_string(hf_config, "benchmarks/configs/llama_20m.json",
              "the model's HF config.json (cuda default: benchmarks/configs/qwen2_5_0_5b.json)");

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


// pm's AdamW over its run's trainable parameters, its schedule and clipping, from config.
absl::Status SetUpOptimizer(const config::RunConfig& config, PmolTrainer* pm) {
  const config::OptimizerConfig& oc = config.optimizer();
  pm->adamw = std::make_unique<AdamW>(AdamWOptionsFromConfig(oc));
  NamedTensors params = pm->run->TrainableParams(), grads = pm->run->TrainableGrads();
  for (size_t i = 0; i < params.size(); ++i) {
    PMOL_RETURN_IF_ERROR(pm->adamw->AddParam(params[i].first, params[i].second, grads[i].second,
                                             pm->run->Decays(params[i].first)));
    pm->grads.push_back(grads[i].second);
  }
  pm->schedule.kind = LrScheduleOptions::kCosine;
  pm->schedule.lr = oc.lr();
  pm->schedule.warmup_steps = oc.warmup_steps();
  pm->schedule.total_steps = oc.max_steps();
  pm->schedule.min_lr_ratio = oc.min_lr_ratio();
  pm->max_grad_norm = oc.max_grad_norm();
  return absl::OkStatus();
}

// The pmol-bf16 row's trainer: the run of `config` in bf16, from the adapters saved at
// adapter_path (rounded to bf16; AdamW keeps f32 masters), on pm32's batch.
absl::StatusOr<std::unique_ptr<PmolTrainer>> MakeBf16Trainer(config::RunConfig config,
                                                              const std::string& adapter_path,
                                                              const PmolTrainer& pm32) {
  config.mutable_model()->set_dtype("bf16");
  auto pm = std::make_unique<PmolTrainer>();
  PMOL_ASSIGN_OR_RETURN(pm->run, BuildRunComponents(config, adapter_path));
  pm->batch = pm32.batch;
  PMOL_RETURN_IF_ERROR(SetUpOptimizer(config, pm.get()));
  return pm;
}

// Wall-clock seconds of fn(), from and to an idle device (pmol's GPU work is asynchronous).
template <typename Fn>
double TimeSynced(Backend* backend, Fn&& fn) {
  backend->Synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  backend->Synchronize();
  return Seconds(t0);
}

// Medians of pmol's phases of a step, and of the frozen model alone (the peer's
// "profile" command measures the same phases), into profile["<phase>"].
std::map<std::string, double> ProfilePmol(PmolTrainer& pm, int reps) {
  RunComponents& run = *pm.run;
  LlamaModel& model = *run.model;
  Backend* be = run.backend;
  const data::PreferenceBatch& b = pm.batch;
  std::vector<int32_t> ids(b.chosen.input_ids.begin(), b.chosen.input_ids.end());
  ids.insert(ids.end(), b.rejected.input_ids.begin(), b.rejected.input_ids.end());
  const int64_t rows = 2 * b.num_pairs, T = b.chosen.seq_len;
  Tensor dlogits = Tensor::Zeros({rows, T, model.config().vocab_size}, run.dtype, be);
  std::map<std::string, std::vector<double>> t;
  for (int i = 0; i < reps; ++i) {
    run.ZeroGrads();
    std::pair<std::vector<double>, std::vector<double>> ref;
    t["reference"].push_back(TimeSynced(be, [&] { ref = run.step->ReferenceLogProbs(b).value(); }));
    t["policy"].push_back(TimeSynced(be, [&] { run.step->Run(b, 1.0, &ref).value(); }));
    t["clip"].push_back(TimeSynced(be, [&] { ClipGradNorm(pm.grads, pm.max_grad_norm); }));
    t["adamw"].push_back(TimeSynced(be, [&] { pm.adamw->Step(LearningRate(pm.schedule, pm.adamw->step())); }));
    t["frozen_fwd"].push_back(TimeSynced(be, [&] { model.Forward(ids, rows, T, nullptr, nullptr).value(); }));
    t["frozen_fwd_bwd"].push_back(TimeSynced(be, [&] {
      ForwardState st;
      model.Forward(ids, rows, T, &st, nullptr).value();
      model.Backward(st, dlogits, nullptr);
    }));
  }
  std::map<std::string, double> medians;
  for (auto& [k, v] : t) medians[k] = Median(v);
  return medians;
}

// Model FLOPs of one training step; see the file comment for the formula.
struct StepFlops {
  double linear = 0, head = 0, attention = 0, adapters = 0;  // one forward pass of each
  double Total() const { return 3 * linear + 3 * head + 4 * attention + 3 * adapters; }
};

StepFlops CountStepFlops(const LlamaConfig& c, int64_t rows, int64_t seq, int64_t head_positions,
                         int64_t adapter_params) {
  const double n = static_cast<double>(rows) * seq, h = c.hidden_size, i = c.intermediate_size;
  const double q = static_cast<double>(c.num_attention_heads) * c.head_dim;
  const double kv = static_cast<double>(c.num_key_value_heads) * c.head_dim;
  StepFlops f;
  f.linear = 2 * n * c.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * i);
  f.head = 2.0 * head_positions * h * c.vocab_size;
  f.attention = 2.0 * c.num_hidden_layers * rows * static_cast<double>(seq) * seq * q;
  f.adapters = 2 * n * adapter_params;
  return f;
}

std::string RunConfigText(const std::string& model_dir, const std::string& device, int threads,
                          int64_t total_steps) {
  return absl::StrCat(
      "model { path: \"", model_dir, "\" dtype: \"f32\" device: \"", device, "\" threads: ", threads, " }\n",
      "adapter { kind: PMOL num_groups: 3 experts_per_group: 2 empty_experts: 1 rank: 8 "
      "alpha: 16 }\n",
      "objective { kind: DPO dpo_loss: SIGMOID beta: 0.1 group_loss_weight: 0.1 "
      "group_label_smoothing: 0.1 balance_loss_weight: 0.01 share_prompt: ",
      FLAGS_share_prompt ? "true" : "false", " }\n",
      "optimizer { lr: 2e-4 beta1: 0.9 beta2: 0.999 eps: 1e-8 weight_decay: 0.01 "
      "decay_routers: false schedule: COSINE warmup_steps: 0 min_lr_ratio: 0 max_grad_norm: 1.0 "
      "max_steps: ", total_steps, " }\n",
      "seed: 1234\n");
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "train_benchmark: %s\n", what.c_str());
  return 1;
}

// One timed implementation: pmol (peer == null) or a peer process.
struct Timed {
  std::string name;
  std::vector<std::string> peer_args;  // the peer's options; empty for pmol
  std::unique_ptr<PeerProcess> peer;
  PmolTrainer* pmol = nullptr;  // a pmol row's trainer (peer_args empty)
  std::string description;
  bool failed = false;
  std::vector<double> seconds;
  double last_loss = 0, last_s = 0;
  double peak_train_mb = -1, peak_all_mb = -1, peak_device_bytes = -1;
  std::map<std::string, double> profile;  // phase -> median seconds
};

int Main() {
  const bool cuda = FLAGS_device == "cuda";
  if (!cuda && FLAGS_device != "cpu") return Fail("--device must be cpu or cuda");
  if (cuda) {  // GPU-sized defaults for flags not given on the command line
    for (const auto& [flag, value] : {std::pair<const char*, const char*>{"seq", "1024"},
                                      {"warmup", "3"},
                                      {"check_f64", "false"},
                                      {"bf16", "true"},
                                      {"compile", "true"},
                                      {"pmol_bf16", "true"},
                                      {"hf_config", "benchmarks/configs/qwen2_5_0_5b.json"}})
      gflags::SetCommandLineOptionWithMode(flag, value, gflags::SET_FLAG_IF_DEFAULT);
  }
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
    Rng rng(17);
    ForEachWeight(lc, w, [&](const WeightSlot& slot) {
      base_params += NumElements(slot.shape);
      if (slot.kind == WeightKind::kBias) FillRandom(*slot.tensor, rng, 0.1);
    });
    absl::Status s = WriteSafetensors(model_dir + "/model.safetensors", NamedWeights(lc, w));
    if (!s.ok()) return Fail(std::string(s.message()));
    std::ofstream(model_dir + "/config.json") << lc.json;
  }
  malloc_trim(0);

  const int64_t total_steps = FLAGS_check_steps + FLAGS_warmup + FLAGS_steps;
  const std::string config_text = RunConfigText(model_dir, FLAGS_device, threads, total_steps);
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
  if (absl::Status s = SetUpOptimizer(*config, &pm); !s.ok()) return Fail(std::string(s.message()));

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
    const config::OptimizerConfig& oc = config->optimizer();
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
  const std::string biases =
      absl::StrCat(lc.qkv_bias ? " q/k/v" : "", lc.o_bias ? " o" : "", lc.mlp_bias ? " mlp" : "");
  std::printf("model: %.1fM parameters (hidden %lld, %lld layers, heads %lld/%lld, vocab %lld%s); "
              "PMoL: %zu adapted modules, %.2fM trainable parameters\n",
              base_params / 1e6, (long long)lc.hidden_size, (long long)lc.num_hidden_layers,
              (long long)lc.num_attention_heads, (long long)lc.num_key_value_heads,
              (long long)lc.vocab_size, biases.empty() ? "" : (", biases on" + biases).c_str(),
              run.adapters->modules().size(), adapter_params / 1e6);
  std::printf("batch: %d pairs x %d tokens (prompt %d + response %d), %d policy rows -> %lld tokens/step; "
              "%d CPU threads each; pmol backend %s\n",
              B, T, prompt, T - prompt, 2 * B, 2LL * B * T, threads, run.backend->Name().c_str());
  std::printf("run config:\n%s", config_text.c_str());

  // ---- Model FLOPs per step (the same count for every implementation).
  int64_t head_positions = 0;  // positions whose logits score a response token
  for (const data::SequenceBatch* s : {&pm.batch.chosen, &pm.batch.rejected})
    for (int32_t r = 0; r < B; ++r)
      for (int32_t t = 1; t < T; ++t) head_positions += s->response_mask[r * T + t];
  const StepFlops flops = CountStepFlops(lc, 2 * B, T, head_positions, adapter_params);
  const double step_tflop = flops.Total() / 1e12;
  const double peer_head_extra = 3 * 2.0 * (2.0 * B * T - head_positions) * lc.hidden_size * lc.vocab_size;
  std::printf("model FLOPs per step: %.3f TFLOP = 3 x %.3f (frozen linears) + 3 x %.3f (LM head at the "
              "%lld response-scoring positions) + 4 x %.3f (causal attention) + 3 x %.3f (adapters); "
              "the PyTorch peer's LM head at all %lld positions does %.3f TFLOP more, not counted\n",
              step_tflop, flops.linear / 1e12, flops.head / 1e12, (long long)head_positions,
              flops.attention / 1e12, flops.adapters / 1e12, 2LL * B * T, peer_head_extra / 1e12);

  // ---- The implementations. On cuda the peers use PyTorch's default thread environment.
  const char* env = cuda ? "default" : "tuned";
  auto peer_args = [&](const char* dtype, const char* peer_env, bool compile) {
    std::vector<std::string> a = {FLAGS_python, FLAGS_peer, setup_path, "--dtype", dtype,
                                  "--env", peer_env, "--device", FLAGS_device};
    if (compile) a.push_back("--compile");
    return a;
  };
  std::vector<Timed> impls;
  auto add = [&](const std::string& name, std::vector<std::string> args, const std::string& description) {
    Timed t;
    t.name = name;
    t.peer_args = std::move(args);
    t.description = description;
    impls.push_back(std::move(t));
  };
  add("pmol", {}, "float32, backend " + run.backend->Name());
  impls[0].pmol = &pm;
  add("pytorch", peer_args("float32", env, false), "float32, eager");
  if (FLAGS_peer_defaults && !cuda)
    add("pytorch-defaults", peer_args("float32", "default", false), "float32, eager, default threads");
  if (FLAGS_bf16) add("pytorch-bf16", peer_args("bf16", env, false), "bf16 autocast, eager");
  if (FLAGS_compile) add("pytorch-bf16-compile", peer_args("bf16", env, true), "bf16 autocast, torch.compile");
  if (FLAGS_pmol_bf16)
    add("pmol-bf16", {}, "bf16 mixed precision (f32 statistics, gradients, masters, AdamW), backend " +
                             run.backend->Name());

  // A row that fails is reported and dropped; the run goes on.
  auto drop = [&](Timed& t, const absl::Status& why) {
    std::printf("%s: FAILED, dropped: %s\n", t.name.c_str(), std::string(why.message()).c_str());
    std::fflush(stdout);
    t.failed = true;
    if (t.peer != nullptr) t.peer->Call("quit").IgnoreError();
    t.peer.reset();
  };
  // Starts t's peer, then runs `catch_up` untimed steps so that it trains from the same
  // optimizer step as the others.
  auto start = [&](Timed& t, int catch_up) {
    absl::StatusOr<std::unique_ptr<PeerProcess>> p = PeerProcess::Start(t.peer_args);
    if (!p.ok()) return drop(t, p.status());
    t.peer = std::move(*p);
    const nlohmann::json& h = t.peer->hello();
    absl::StrAppend(&t.description, ", attention ", h.value("attention", "?"), "; PyTorch ",
                    h.value("torch", "?"), " on ", h.value("device", "?"));
    for (int s = 0; s < catch_up && !t.failed; ++s)
      if (absl::StatusOr<nlohmann::json> r = t.peer->Call("step"); !r.ok()) drop(t, r.status());
  };

  // pmol in bf16: built when its turn comes on cuda (after the f32 pmol row has handed its
  // memory back), at once on cpu (interleaved); it catches up the check steps untimed.
  std::unique_ptr<PmolTrainer> pm16;
  std::vector<double> check_losses;  // the f32 pmol's losses in the check steps
  auto start_pmol_bf16 = [&](Timed& t) {
    absl::StatusOr<std::unique_ptr<PmolTrainer>> built = MakeBf16Trainer(*config, adapter_path, pm);
    if (!built.ok()) return drop(t, built.status());
    pm16 = std::move(*built);
    t.pmol = pm16.get();
    for (int s = 0; s < FLAGS_check_steps; ++s) {
      const double loss = pm16->Step(nullptr);
      std::printf("pmol-bf16 catch-up step %d: loss %.6f, pmol f32 %.6f (relative %.1e; bf16 "
                  "rounding moves it by ~1e-3)\n",
                  s + 1, loss, check_losses[s], std::fabs(loss - check_losses[s]) / std::fabs(check_losses[s]));
    }
    if (cuda) run.backend->ReleaseCachedMemory();
  };

  // ---- Check. The float64 peer first, alone; its dumps wait on disk.
  auto dump_path = [&](const std::string& tag, int s) {
    return absl::StrCat(FLAGS_workdir, "/peer_", tag, "_step", s + 1, ".safetensors");
  };
  if (FLAGS_check_f64) {
    absl::StatusOr<std::unique_ptr<PeerProcess>> p = PeerProcess::Start(peer_args("float64", env, false));
    if (!p.ok()) return Fail("float64 peer: " + std::string(p.status().message()));
    for (int s = 0; s < FLAGS_check_steps; ++s)
      if (absl::StatusOr<nlohmann::json> r = (*p)->Call("dump " + dump_path("f64", s)); !r.ok())
        return Fail("float64 peer: " + std::string(r.status().message()));
    (*p)->Call("quit").IgnoreError();
  }
  Timed& checked = impls[1];
  start(checked, 0);
  if (checked.failed) return Fail("the checked PyTorch peer could not start");
  std::printf("peer: PyTorch %s, %d threads, device %s, attention %s; RSS %.0f MB after importing torch, "
              "before loading\n",
              checked.peer->hello()["torch"].get<std::string>().c_str(),
              checked.peer->hello()["threads"].get<int>(),
              checked.peer->hello().value("device", "?").c_str(),
              checked.peer->hello().value("attention", "?").c_str(),
              checked.peer->hello().value("rss_after_import_mb", -1.0));

  const NamedTensors names = run.TrainableParams();
  std::vector<std::vector<double>> initial;
  for (auto& [name, t] : names) initial.push_back(t.ToDoubles());
  bool agree = true;
  std::printf("\ncheck (pmol vs PyTorch f32%s): relative differences, tolerance in []\n",
              FLAGS_check_f64 ? "; and against PyTorch f64: pmol / PyTorch-f32" : "");
  for (int s = 0; s < FLAGS_check_steps; ++s) {
    PmolTrainer::Dump mine;
    pm.Step(&mine);
    check_losses.push_back(mine.total);
    // cuda: each side hands its cached memory back after its step, so that only one of
    // them holds a step's activations at a time.
    if (cuda) run.backend->ReleaseCachedMemory();
    auto open = [&](const std::string& path) -> std::shared_ptr<SafetensorsFile> {
      absl::StatusOr<std::shared_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
      if (!f.ok()) {
        std::fprintf(stderr, "train_benchmark: %s\n", std::string(f.status().message()).c_str());
        return nullptr;
      }
      return *f;
    };
    std::shared_ptr<SafetensorsFile> theirs;
    if (absl::StatusOr<nlohmann::json> r = checked.peer->Call("dump " + dump_path("f32", s)); r.ok())
      theirs = open(dump_path("f32", s));
    else
      std::fprintf(stderr, "train_benchmark: %s\n", std::string(r.status().message()).c_str());
    if (cuda) checked.peer->Call("release").IgnoreError();
    std::shared_ptr<SafetensorsFile> exact = FLAGS_check_f64 ? open(dump_path("f64", s)) : nullptr;
    if (theirs == nullptr || (FLAGS_check_f64 && exact == nullptr)) return Fail("peer dump failed");
    Backend* cpu = GetBackend(DeviceType::kCpu, threads).value();
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
  if (!agree) {
    checked.peer->Call("quit").IgnoreError();
    std::printf("\npmol and the PyTorch peer DISAGREE: no ratio is reported.\n");
    return 1;
  }
  std::printf("pmol and PyTorch agree.%s\n",
              impls.size() > 2 ? " (Rows other than pytorch are not checked.)" : "");

  // ---- Timing.
  Backend* const backend = run.backend;  // pm's run may go before pmol-bf16's turn (cuda)
  bool rss_ok = false;
  auto reset_peak = [&](Timed& t) {  // before the first timed step
    if (t.peer == nullptr) {
      malloc_trim(0);
      rss_ok = ResetPeakRss();
      backend->ResetPeakMemory();
      return;
    }
    absl::StatusOr<nlohmann::json> r = t.peer->Call("reset_peak");
    if (!r.ok() || !(*r)["reset"].get<bool>()) std::printf("(%s: VmHWM could not be reset)\n", t.name.c_str());
  };
  auto step = [&](Timed& t, bool timed) {
    if (t.peer == nullptr) {
      t.last_s = TimeSynced(backend, [&] { t.last_loss = t.pmol->Step(nullptr); });
    } else {
      absl::StatusOr<nlohmann::json> r = t.peer->Call("step");
      if (!r.ok()) return drop(t, r.status());
      t.last_loss = (*r)["loss"].get<double>();
      t.last_s = (*r)["seconds"].get<double>();
    }
    if (timed) t.seconds.push_back(t.last_s);
  };
  const int reps = std::max(3, FLAGS_steps / 2);  // --profile repetitions
  auto finish = [&](Timed& t) {  // peaks, then the profile; the peer exits
    if (t.failed) return;
    if (t.peer == nullptr) {
      t.peak_train_mb = rss_ok ? ProcStatusKb("VmHWM") / 1024.0 : -1;
      struct rusage ru;
      getrusage(RUSAGE_SELF, &ru);
      t.peak_all_mb = ru.ru_maxrss / 1024.0;
      t.peak_device_bytes = static_cast<double>(backend->GetMemoryStats().peak_in_use_bytes);
      if (FLAGS_profile) t.profile = ProfilePmol(*t.pmol, reps);
      return;
    }
    absl::StatusOr<nlohmann::json> r = t.peer->Call("peak");
    if (!r.ok()) return drop(t, r.status());
    t.peak_train_mb = r->value("peak_train_rss_mb", -1.0);
    t.peak_all_mb = (*r)["peak_rss_mb"].get<double>();
    t.peak_device_bytes = r->value("peak_device_bytes", -1.0);
    if (FLAGS_profile) {
      absl::StatusOr<nlohmann::json> p = t.peer->Call(absl::StrCat("profile ", reps));
      if (!p.ok()) return drop(t, p.status());
      for (auto& [k, v] : p->items()) t.profile[k] = v.get<double>();
    }
    t.peer->Call("quit").IgnoreError();
    t.peer.reset();
  };
  auto print_step = [&](const Timed& t) {
    std::printf("  %s %.3f s (loss %.6f)", t.name.c_str(), t.last_s, t.last_loss);
  };
  std::string load_before, load_after;
  if (!cuda) {
    // Interleaved step by step, every peer alive; the order rotates every step.
    for (size_t k = 2; k < impls.size(); ++k) {
      if (impls[k].peer_args.empty()) {
        start_pmol_bf16(impls[k]);
      } else {
        start(impls[k], FLAGS_check_steps);
      }
    }
    load_before = LoadAverage();
    for (int i = 0; i < FLAGS_warmup + FLAGS_steps; ++i) {
      const bool timed = i >= FLAGS_warmup;
      if (i == FLAGS_warmup)
        for (Timed& t : impls)
          if (!t.failed) reset_peak(t);
      for (size_t k = 0; k < impls.size(); ++k)
        if (Timed& t = impls[(i + k) % impls.size()]; !t.failed) step(t, timed);
      std::printf("  step %d%s:", i + 1, timed ? "" : " (warm-up)");
      for (const Timed& t : impls)
        if (!t.failed) print_step(t);
      std::printf("\n");
      std::fflush(stdout);
    }
    load_after = LoadAverage();
    for (Timed& t : impls) finish(t);
  } else {
    // One implementation after another: the peers (each started before its steps and
    // ended after them), then pmol alone on the GPU (its pool holds no activations
    // meanwhile: released after each check step), then pmol-bf16, built after the f32
    // run has gone and its memory is back in the pool.
    std::vector<size_t> order;
    for (size_t k = 1; k < impls.size(); ++k)
      if (!impls[k].peer_args.empty()) order.push_back(k);
    order.push_back(0);
    for (size_t k = 1; k < impls.size(); ++k)
      if (impls[k].peer_args.empty()) order.push_back(k);
    for (size_t k : order) {
      Timed& t = impls[k];
      if (t.name == "pmol-bf16") {
        pm = PmolTrainer();
        backend->ReleaseCachedMemory();
        start_pmol_bf16(t);
      } else if (k > 1) {
        start(t, FLAGS_check_steps);
      }
      for (int i = 0; i < FLAGS_warmup + FLAGS_steps && !t.failed; ++i) {
        const bool timed = i >= FLAGS_warmup;
        if (i == FLAGS_warmup) reset_peak(t);
        step(t, timed);
        if (t.failed) break;
        std::printf("  step %d%s:", i + 1, timed ? "" : " (warm-up)");
        print_step(t);
        std::printf("\n");
        std::fflush(stdout);
      }
      finish(t);
    }
  }

  // ---- Results.
  const double tok = 2.0 * B * T;
  auto mn = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
  auto mx = [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); };
  std::printf("\nmedian of %d %s steps after %d warm-up steps (tokens = 2 x %d x %d per step; "
              "model FLOPs %.3f TFLOP per step)\n",
              FLAGS_steps, cuda ? "consecutive" : "interleaved", FLAGS_warmup, B, T, step_tflop);
  std::printf("%-21s %8s %8s %8s %9s %8s", "impl", "s/step", "min", "max", "tokens/s", "TFLOP/s");
  if (cuda)
    std::printf(" %6s %15s\n", "MFU", "peak GPU memory");
  else
    std::printf(" %15s %17s\n", "peak RSS train", "peak RSS process");
  for (const Timed& t : impls) {
    if (t.failed) {
      std::printf("%-21s failed (see above)\n", t.name.c_str());
      continue;
    }
    const double s = Median(t.seconds);
    std::printf("%-21s %8.3f %8.3f %8.3f %9.0f %8.2f", t.name.c_str(), s, mn(t.seconds), mx(t.seconds),
                tok / s, step_tflop / s);
    if (cuda)
      std::printf(" %5.1f%% %11.2f GiB\n", 100 * step_tflop / s / FLAGS_peak_tflops,
                  t.peak_device_bytes / (1024.0 * 1024 * 1024));
    else
      std::printf(" %12.0f MB %14.0f MB\n", t.peak_train_mb, t.peak_all_mb);
  }
  for (const Timed& ours : impls) {
    if (!ours.peer_args.empty() || ours.failed) continue;
    for (const Timed& theirs : impls)
      if (!theirs.peer_args.empty() && !theirs.failed)
        std::printf("speed ratio %s/%s (tokens/s, medians): %.2fx   (fastest steps: %.2fx)\n",
                    ours.name.c_str(), theirs.name.c_str(), Median(theirs.seconds) / Median(ours.seconds),
                    mn(theirs.seconds) / mn(ours.seconds));
  }
  for (const Timed& t : impls) std::printf("  %-21s %s\n", t.name.c_str(), t.description.c_str());
  if (cuda) {
    std::printf("MFU = model FLOP/s / %.1f TFLOP/s (--peak_tflops; default: H100 SXM dense BF16 "
                "tensor-core peak). The f32 rows (pmol, pytorch) use no tensor cores: H100 SXM's FP32 "
                "peak is 67 TFLOP/s.\n",
                FLAGS_peak_tflops);
    std::printf("peak GPU memory over the timed steps: pmol Backend::GetMemoryStats().peak_in_use_bytes "
                "(stream-ordered pool, blocks rounded up), PyTorch torch.cuda.max_memory_allocated().\n");
  } else {
    std::printf("pytorch: OPENBLAS_NUM_THREADS=%d OMP_WAIT_POLICY=PASSIVE + torch.set_num_threads(%d); "
                "pytorch-defaults: torch.set_num_threads(%d) only%s\n", threads, threads, threads,
                threads < AvailableCpus() ? " (its GEMMs then use OpenBLAS's default: every core)" : "");
    std::printf("1-min load average at start / end of timing: %s / %s (this run alone adds about %d; "
                "more means other processes shared the %d CPUs)\n",
                load_before.c_str(), load_after.c_str(), threads, threads);
    if (!rss_ok) std::printf("(peak RSS train: /proc/self/clear_refs not writable; n/a)\n");
  }

  if (FLAGS_profile) {
    std::printf("\nphases (median of %d repetitions, wall clock, seconds)\n%-40s", reps, "");
    for (const Timed& t : impls) std::printf(" %21s", t.name.c_str());
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
        auto it = t.profile.find(key);
        std::printf(" %21.4f", it == t.profile.end() ? -1.0 : it->second);
      }
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace
}  // namespace pmol

int main(int argc, char** argv) {
  gflags::SetUsageMessage("pmol vs PyTorch: PMoL-DPO training steps per second, on the CPU or one GPU");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  std::signal(SIGPIPE, SIG_IGN);  // a peer that exited is an error reply, not the end of this process
  return pmol::Main();
}
