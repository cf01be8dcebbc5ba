// `pmol train` on several ranks under a real `mpirun` (the binary as a subprocess, tiny
// Llama, demo corpus, a PMoL DPO run with dropout and gradient accumulation):
//   * 2 and 4 ranks, ZeRO stages 0, 1 and 2, train the same model as one process: the
//     final adapter and every step's loss agree within 1e-5 relative; so do LoRA and
//     full fine-tuning (every weight sharded by ZeRO) on 2 ranks;
//   * a checkpoint of 4 ranks resumes on 2 ranks and on 1 process (the optimizer shards
//     are re-cut) and still ends with the one-process weights;
//   * a rank killed with SIGKILL ends the whole job within seconds, the launcher naming
//     the rank; the checkpoints left are whole, and the run resumes on fewer ranks to the
//     uninterrupted weights;
//   * a rank that stops answering (SIGSTOP) ends the job after parallel.collective_timeout_s
//     with a message saying so, instead of a hang;
//   * expert parallelism (ep only, and dp x ep on 4 ranks; ZeRO 0, 1, 2; dense and top-k
//     routing with a capacity factor) trains the one-process model; a dp x ep checkpoint
//     resumes with another dp, and a checkpoint of another ep is refused by name;
//     preference-aware sampling runs and reports its all-to-all bytes;
//   * config errors that depend on the world size are printed once, by rank 0.
// Tolerance 1e-5 relative (to the largest element of each tensor): the ranks sum their
// gradients in another order than one process does (float32 all-reduce vs accumulation),
// so the runs differ by rounding only, about 1e-6 relative over these runs; a wrong share
// of the batch, a wrong scale or a lost shard moves weights by 1e-2 and more.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/core/tensor.h"
#include "pmol/io/safetensors.h"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

namespace fs = std::filesystem;

constexpr double kRelTol = 1e-5;

const TrainFixture& Shared() { return SharedTrainFixture("ranks_shared"); }

struct RunShape {
  int max_steps = 8;
  int global_batch = 8;
  int micro_batch = 2;
  int checkpoint_every = 4;
  std::string adapter = kTinyPmolAdapter;
  std::string dtype = "f32";
};

// A PMoL DPO run over two preferences, with dropout (so the micro-batches' dropout masks
// must follow the pairs, not the ranks) and accumulation on every world size used here.
std::string WriteRunConfig(const std::string& out, const RunShape& shape) {
  const TrainFixture& f = Shared();
  const std::string text = R"(seed: 3
output_dir: ")" + out + R"("
model { path: ")" + f.model + R"(" threads: 1 dtype: ")" + shape.dtype + R"(" }
)" + shape.adapter + R"(
objective { kind: DPO beta: 0.1 }
optimizer { lr: 5e-3 warmup_steps: 2 max_steps: )" + std::to_string(shape.max_steps) + R"( weight_decay: 0.01 max_grad_norm: 1.0 }
data {
  tokenizer: ")" + f.data + R"(/tokenizer.json"
  preference_names: ["helpfulness", "harmlessness"]
  train { path: ")" + f.data + R"(/preference/helpfulness/eval.jsonl" }
  train { path: ")" + f.data + R"(/preference/harmlessness/eval.jsonl" }
  eval { path: ")" + f.data + R"(/preference/harmlessness/eval.jsonl" }
  max_length: 96
  max_prompt_length: 64
  micro_batch_size: )" + std::to_string(shape.micro_batch) + R"(
  global_batch_size: )" + std::to_string(shape.global_batch) + R"(
}
eval { every_steps: 4 max_pairs: 6 }
checkpoint { every_steps: )" + std::to_string(shape.checkpoint_every) + R"( keep_last: 3 }
logging { every_steps: 1 }
)";
  fs::create_directories(out);
  const std::string path = out + ".textproto";
  WriteFile(path, text);
  return path;
}

// `mpirun -np ranks pmol train --config=config extra...` (started, not waited for).
RunningProgram StartRanks(int ranks, const std::string& config, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {"/usr/bin/mpirun", "--oversubscribe", "--allow-run-as-root",
                                   "--bind-to", "none", "--mca", "btl", "self,vader,tcp",
                                   "-np", std::to_string(ranks), fs::absolute(PmolPath()).string(),
                                   "train", "--config=" + config};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return StartProgram(argv);
}

CommandResult RunRanks(int ranks, const std::string& config, const std::vector<std::string>& extra = {}) {
  if (ranks == 1) {  // one process, no launcher
    std::vector<std::string> args = {"train", "--config=" + config};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunPmol(args);
  }
  return WaitProgram(StartRanks(ranks, config, extra));
}

// True when `pid` has ended (it stays a zombie for WaitProgram to collect).
bool Ended(pid_t pid) {
  siginfo_t info{};
  return waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

// Waits up to `seconds` for `p` to end; past that kills it (the test then fails).
CommandResult WaitWithin(const RunningProgram& p, double seconds, double* took = nullptr) {
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  while (!Ended(p.pid) && elapsed() < seconds) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (took != nullptr) *took = elapsed();
  if (!Ended(p.pid)) {
    ADD_FAILURE() << p.command << " still running after " << seconds << " s; killing it";
    kill(p.pid, SIGKILL);
  }
  return WaitProgram(p);
}

// The pid of rank `rank` among the processes started by the mpirun `launcher`.
pid_t RankPid(pid_t launcher, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const fs::directory_entry& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream environ_file(e.path() / "environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(environ_file)), std::istreambuf_iterator<char>());
    bool match = false;
    for (size_t at = 0; at < env.size();) {
      const size_t end = std::min(env.find('\0', at), env.size());
      if (env.compare(at, end - at, want) == 0) match = true;
      at = end + 1;
    }
    if (!match) continue;
    // Its parent chain must reach the launcher (another test's ranks do not count).
    pid_t pid = std::stoi(name);
    for (int depth = 0; depth < 8 && pid > 1; ++depth) {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string stat_line;
      std::getline(stat, stat_line);
      const size_t close = stat_line.rfind(')');
      if (close == std::string::npos) break;
      char state = 0;
      int ppid = 0;
      if (sscanf(stat_line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) break;
      if (ppid == launcher) return std::stoi(name);
      pid = ppid;
    }
  }
  return -1;
}

// Waits (up to 120 s) until `path` exists or `p` has ended.
bool AppearsWhileRunning(const std::string& path, const RunningProgram& p) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(path)) return true;
    if (Ended(p.pid)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

using Tensors = std::map<std::string, std::vector<double>>;

Tensors ReadTensors(const std::string& path) {
  Tensors out;
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  Backend* cpu = GetBackend(DeviceType::kCpu, 1).value();
  for (const SafetensorsEntry& e : (*file)->entries()) {
    auto t = (*file)->Load(e.name, cpu, DType::kF64);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) out[e.name] = t->ToDoubles();
  }
  return out;
}

// Every tensor of run `dir`'s adapter (or, for full fine-tuning, merged model) within
// kRelTol of `ref`'s.
void ExpectSameAdapter(const std::string& ref, const std::string& dir,
                       const std::string& adapter = "/adapter/adapter_model.safetensors", double tol = kRelTol) {
  const Tensors want = ReadTensors(ref + adapter);
  const Tensors got = ReadTensors(dir + adapter);
  ASSERT_FALSE(want.empty());
  ASSERT_EQ(got.size(), want.size()) << dir;
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    const std::vector<double>& g = got.at(name);
    ASSERT_EQ(g.size(), w.size()) << name;
    double scale = 0, diff = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      scale = std::max(scale, std::abs(w[i]));
      diff = std::max(diff, std::abs(w[i] - g[i]));
    }
    EXPECT_LE(diff, tol * scale) << dir << ": " << name << " differs by " << diff << " (largest element "
                                     << scale << ")";
  }
}

// `key` of each "train" line of a metrics log, by step (a resumed run's repeats replace).
std::map<int64_t, double> TrainMetric(const std::string& dir, const std::string& key) {
  std::map<int64_t, double> losses;
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("split", "") == "train") losses[j["step"].get<int64_t>()] = j.at(key).get<double>();
  }
  return losses;
}

// bf16 runs that differ only in rounding: every tensor of `dir`'s weights is as close to
// `ref`'s as `ref`'s is to the f32 run `f32_ref` of the same model, within `factor`, in
// the Frobenius norm: ||got - want|| <= factor ||want - f32||. The bound is bf16's own
// rounding noise on this run, measured in the same test; it is not a bound on each
// element, because Adam turns rounding-level differences in near-zero gradients (the
// routers' early on, while every lora_B is still about 0) into update-sized steps of
// either sign, so single elements of two bf16 runs differ by up to lr x steps. A lost
// expert, a wrong gate or a wrong share of the batch moves whole tensors and exceeds it.
void ExpectWithinBf16Noise(const std::string& f32_ref, const std::string& ref, const std::string& dir,
                           double factor, const std::string& weights = "/adapter/adapter_model.safetensors") {
  const Tensors f32 = ReadTensors(f32_ref + weights), want = ReadTensors(ref + weights),
                got = ReadTensors(dir + weights);
  ASSERT_FALSE(want.empty());
  ASSERT_EQ(got.size(), want.size()) << dir;
  ASSERT_EQ(f32.size(), want.size()) << f32_ref;
  double worst = 0;
  for (const auto& [name, w] : want) {
    ASSERT_TRUE(got.count(name) && f32.count(name)) << name;
    const std::vector<double>&g = got.at(name), &f = f32.at(name);
    ASSERT_TRUE(g.size() == w.size() && f.size() == w.size()) << name;
    double diff = 0, noise = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      diff += (g[i] - w[i]) * (g[i] - w[i]);
      noise += (w[i] - f[i]) * (w[i] - f[i]);
    }
    diff = std::sqrt(diff);
    noise = std::sqrt(noise);
    ASSERT_GT(noise, 0) << name << ": the bf16 and f32 runs are identical; no noise floor";
    worst = std::max(worst, diff / noise);
    EXPECT_LE(diff, factor * noise) << dir << ": " << name << " differs from the one-process bf16 run by " << diff
                                    << " (Frobenius), the bf16 run from the f32 run by " << noise;
  }
  std::cout << "largest ratio of the distance to the bf16 run over bf16's own distance to f32: " << worst << "\n";
}

// Every step's total loss and gradient norm within kRelTol of `ref`'s.
void ExpectSameLosses(const std::string& ref, const std::string& dir, double tol = kRelTol) {
  for (const char* key : {"loss/total", "grad_norm"}) {
    const std::map<int64_t, double> want = TrainMetric(ref, key), got = TrainMetric(dir, key);
    ASSERT_FALSE(want.empty());
    ASSERT_EQ(got.size(), want.size()) << dir;
    for (const auto& [step, value] : want) {
      EXPECT_NEAR(got.at(step), value, tol * std::abs(value)) << dir << " step " << step << " " << key;
    }
  }
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The one-process run of `shape`, made once per shape.
const std::string& OneProcess(const RunShape& shape) {
  static std::map<std::string, std::string> runs;
  const std::string key =
      std::to_string(shape.max_steps) + "_" + std::to_string(shape.global_batch) + "_" + shape.dtype;
  if (!runs.count(key)) {
    const std::string dir = FreshDir("one_process_" + key);
    const CommandResult r = RunRanks(1, WriteRunConfig(dir, shape));
    EXPECT_TRUE(ExitedWith(r, 0));
    runs[key] = dir;
  }
  return runs.at(key);
}

TEST(TrainRanksTest, RanksAndZeroStagesTrainTheOneProcessModel) {
  const RunShape shape;  // 8 pairs a step: 4 micro-batches of 2 pairs, spread over the ranks
  const std::string& ref = OneProcess(shape);
  struct Case {
    int ranks, zero_stage;
    bool overlap = true;
  };
  // Buckets of 2 KiB (the adapter's Ψ is several of them), so that the reduction of the
  // upper layers' buckets starts during the backward (overlapped); one case reduces
  // after it. Both give the one-process model.
  for (const Case c : {Case{2, 0}, Case{2, 2}, Case{4, 1}, Case{4, 2}, Case{2, 0, false}}) {
    const std::string name = "ranks" + std::to_string(c.ranks) + "_zero" + std::to_string(c.zero_stage) +
                             (c.overlap ? "" : "_no_overlap");
    SCOPED_TRACE(name);
    const std::string dir = FreshDir(name);
    const CommandResult r = RunRanks(c.ranks, WriteRunConfig(dir, shape),
                                     {"--set=parallel.zero_stage=" + std::to_string(c.zero_stage),
                                      "--set=parallel.bucket_mb=0.002",
                                      std::string("--set=parallel.overlap_reduction=") + (c.overlap ? "true" : "false")});
    ASSERT_TRUE(ExitedWith(r, 0));
    // The time blocked on reductions after the backward is reported every step.
    const std::map<int64_t, double> wait = TrainMetric(dir, "comm/gradient_wait_seconds_per_step");
    EXPECT_EQ(wait.size(), 8u);
    for (const auto& [step, seconds] : wait) EXPECT_GE(seconds, 0) << "step " << step;
    // The device-side wait (NCCL's compute-stream stalls) is reported too: 0 on MPI, whose
    // waits block the host and are in the figure above.
    const std::map<int64_t, double> device_wait = TrainMetric(dir, "comm/gradient_device_wait_seconds_per_step");
    EXPECT_EQ(device_wait.size(), 8u);
    for (const auto& [step, seconds] : device_wait) EXPECT_EQ(seconds, 0) << "step " << step;
    // So is the peak device memory, the largest over the ranks (a collective every rank
    // reaches at the same step).
    const std::map<int64_t, double> peak = TrainMetric(dir, "memory/peak_bytes"),
                                     in_use = TrainMetric(dir, "memory/in_use_bytes");
    EXPECT_EQ(peak.size(), 8u);
    for (const auto& [step, bytes] : peak) EXPECT_GT(bytes, in_use.at(step)) << "step " << step;
    EXPECT_NE(r.stdout_text.find(std::to_string(c.ranks) + " ranks ("), std::string::npos) << r.Describe();
    EXPECT_EQ(Count(r.stdout_text, "done: 8 steps"), 1u) << "only rank 0 prints\n" << r.Describe();
    ExpectSameAdapter(ref, dir);
    ExpectSameLosses(ref, dir);
    // Rank 0's gradient traffic per step (the trainer's metric) is the analytic volume of
    // dist/zero_optimizer.h: Ψ f32 elements, rank 0 owning the first shard of EvenBlocks,
    // A = 8 / (2 N) micro-batches per rank.
    auto shard0 = SafetensorsFile::Open(dir + "/checkpoints/step-00000008/optimizer-shard-0.safetensors");
    ASSERT_TRUE(shard0.ok()) << shard0.status();
    const int64_t psi = std::stoll((*shard0)->metadata().at("flat_size")), n = c.ranks;
    const int64_t own = (psi + n - 1) / n, norm = 2 * (n - 1) * 8 / n, a = 8 / (2 * n);
    const int64_t analytic = c.zero_stage == 0   ? 2 * (n - 1) * psi * 4 / n
                             : c.zero_stage == 1 ? 2 * (psi - own) * 4 + norm
                                                 : (a + 1) * (psi - own) * 4 + norm;
    const std::map<int64_t, double> bytes = TrainMetric(dir, "comm/gradient_bytes_per_step");
    ASSERT_EQ(bytes.size(), 8u);
    for (const auto& [step, b] : bytes) EXPECT_EQ(b, static_cast<double>(analytic)) << "step " << step;
    // Each rank holding optimizer state wrote its shard of it.
    const int shards = c.zero_stage == 0 ? 1 : c.ranks;
    for (int rank = 0; rank < c.ranks; ++rank) {
      EXPECT_EQ(fs::exists(dir + "/checkpoints/step-00000008/optimizer-shard-" + std::to_string(rank) + ".safetensors"),
                rank < shards)
          << "rank " << rank;
    }
  }
}

// In f64, so that the comparison is tight: in f32, LoRA's A matrices start with near-zero
// gradients (B = 0) whose rounding Adam's normalisation turns into visible differences
// (6e-6 to 2e-5 relative after 6 steps, while f64 gives 1.5e-14).
TEST(TrainRanksTest, LoraAndFullFineTuningTrainTheOneProcessModel) {
  constexpr double kF64Tol = 1e-10;
  struct Case {
    std::string name, adapter, weights;
  };
  const Case cases[] = {
      {"lora", "adapter { kind: LORA rank: 4 alpha: 8 dropout: 0.1 }", "/adapter/adapter_model.safetensors"},
      {"full", "adapter { kind: FULL }", "/merged/model.safetensors"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    RunShape shape;
    shape.adapter = c.adapter;
    shape.max_steps = 6;
    shape.dtype = "f64";
    const std::string ref = FreshDir(c.name + "_one_process");
    ASSERT_TRUE(ExitedWith(RunRanks(1, WriteRunConfig(ref, shape)), 0));
    for (const int zero_stage : {0, 2}) {
      const std::string dir = FreshDir(c.name + "_ranks2_zero" + std::to_string(zero_stage));
      // Small buckets: full fine-tuning's buckets hold whole and split weights of every
      // layer, and start as the backward passes them.
      const CommandResult r = RunRanks(2, WriteRunConfig(dir, shape),
                                       {"--set=parallel.zero_stage=" + std::to_string(zero_stage),
                                        "--set=parallel.bucket_mb=0.01"});
      ASSERT_TRUE(ExitedWith(r, 0));
      ExpectSameAdapter(ref, dir, c.weights, kF64Tol);
      ExpectSameLosses(ref, dir, kF64Tol);
    }
  }
}

TEST(TrainRanksTest, CheckpointOfFourRanksResumesOnTwoRanksAndOnOneProcess) {
  const RunShape shape;
  const std::string& ref = OneProcess(shape);
  const std::string dir = FreshDir("resharded");
  const std::string config = WriteRunConfig(dir, shape);
  ASSERT_TRUE(ExitedWith(RunRanks(4, config), 0));
  for (const int ranks : {2, 1}) {
    SCOPED_TRACE("resumed on " + std::to_string(ranks));
    // Back to the step-4 checkpoint (4 optimizer shards when first written), as if the
    // job had been stopped there.
    fs::remove_all(dir + "/checkpoints/step-00000008");
    fs::remove_all(dir + "/adapter");
    const CommandResult r = RunRanks(ranks, config);
    ASSERT_TRUE(ExitedWith(r, 0));
    EXPECT_NE(r.stdout_text.find("step 4"), std::string::npos) << r.Describe();
    EXPECT_NE(r.stdout_text.find("written by 4 rank(s)"), std::string::npos) << "the changed world size is noted\n" << r.Describe();
    EXPECT_NE(r.stdout_text.find("done: 8 steps"), std::string::npos) << r.Describe();
    ExpectSameAdapter(ref, dir);
  }
}

TEST(TrainRanksTest, KilledRankEndsTheJobAndTheRunResumesOnFewerRanks) {
  // Long enough (about 10 s) to be killed in the middle.
  RunShape shape;
  shape.max_steps = 40;
  shape.global_batch = 48;
  const std::string& ref = OneProcess(shape);
  const std::string dir = FreshDir("killed_rank");
  const std::string config = WriteRunConfig(dir, shape);
  const RunningProgram job = StartRanks(3, config);
  ASSERT_TRUE(AppearsWhileRunning(dir + "/checkpoints/step-00000004", job)) << WaitProgram(job).Describe();
  const pid_t victim = RankPid(job.pid, 1);
  ASSERT_GT(victim, 0) << "rank 1 of mpirun " << job.pid << " not found";
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  double took = 0;
  const CommandResult killed = WaitWithin(job, 60, &took);
  EXPECT_FALSE(ExitedWith(killed, 0)) << killed.Describe();
  EXPECT_TRUE(StderrMentions(killed, {"rank 1", "signal 9"}));
  EXPECT_EQ(RankPid(job.pid, 0), -1) << "rank 0 outlived the job";
  std::cout << "the job ended " << took << " s after rank 1 was killed\n";
  EXPECT_FALSE(fs::exists(dir + "/adapter")) << "the run had finished before the kill; nothing was tested";

  const CommandResult resumed = RunRanks(2, config);
  ASSERT_TRUE(ExitedWith(resumed, 0));
  EXPECT_NE(resumed.stdout_text.find("resum"), std::string::npos) << resumed.Describe();
  EXPECT_NE(resumed.stdout_text.find("done: 40 steps"), std::string::npos) << resumed.Describe();
  ExpectSameAdapter(ref, dir);
}

TEST(TrainRanksTest, StoppedRankEndsTheJobAfterTheCollectiveTimeout) {
  RunShape shape;
  shape.max_steps = 400;
  shape.global_batch = 48;
  const std::string dir = FreshDir("stopped_rank");
  const RunningProgram job = StartRanks(2, WriteRunConfig(dir, shape), {"--set=parallel.collective_timeout_s=3"});
  ASSERT_TRUE(AppearsWhileRunning(dir + "/checkpoints/step-00000004", job)) << WaitProgram(job).Describe();
  const pid_t victim = RankPid(job.pid, 1);
  ASSERT_GT(victim, 0);
  ASSERT_EQ(kill(victim, SIGSTOP), 0);
  const CommandResult r = WaitWithin(job, 60);
  kill(victim, SIGKILL);  // in case the launcher left it behind
  EXPECT_FALSE(ExitedWith(r, 0)) << r.Describe();
  EXPECT_TRUE(StderrMentions(r, {"rank 0", "did not complete within 3 s", "resume it from the last checkpoint"}));
}

// With 3 experts (groups of 1 and 2) on 2 expert-parallel ranks, placed whole by
// expert count: rank 0 holds the 2-expert group (experts 1 and 2), rank 1 expert 0.
// On 3 ranks (ep 3; 12 pairs a step) the 2 groups must straddle: one expert per rank.
TEST(TrainRanksTest, ExpertParallelismTrainsTheOneProcessModel) {
  struct Case {
    int ranks, ep, zero_stage;
  };
  for (const Case c : {Case{2, 2, 0}, Case{4, 2, 1}, Case{4, 2, 2}, Case{3, 3, 0}}) {
    RunShape shape;
    shape.global_batch = c.ranks == 3 ? 12 : 8;
    const std::string& ref = OneProcess(shape);
    const std::string name = "ranks" + std::to_string(c.ranks) + "_ep" + std::to_string(c.ep) + "_zero" +
                             std::to_string(c.zero_stage);
    SCOPED_TRACE(name);
    const std::string dir = FreshDir(name);
    const CommandResult r = RunRanks(c.ranks, WriteRunConfig(dir, shape),
                                     {"--set=parallel.ep=" + std::to_string(c.ep),
                                      "--set=parallel.zero_stage=" + std::to_string(c.zero_stage),
                                      "--set=parallel.bucket_mb=0.001"});  // routers and experts in several buckets
    ASSERT_TRUE(ExitedWith(r, 0));
    EXPECT_NE(r.stdout_text.find(std::to_string(c.ep) + " expert-parallel"), std::string::npos) << r.Describe();
    if (c.ep == 2) {
      EXPECT_NE(r.stdout_text.find("expert-parallel rank 0 holds experts 1,2"), std::string::npos) << r.Describe();
    }
    ExpectSameAdapter(ref, dir);
    ExpectSameLosses(ref, dir);
    // Dense routing: every row goes to every expert-parallel rank, so rows do move.
    for (const auto& [step, b] : TrainMetric(dir, "comm/expert_all_to_all_bytes_per_step")) {
      EXPECT_GT(b, 0) << "step " << step;
    }
    // One expert optimizer per expert-parallel rank, its state by dp index.
    EXPECT_TRUE(fs::exists(dir + "/checkpoints/step-00000008/expert-optimizer-ep" + std::to_string(c.ep - 1) + "of" +
                           std::to_string(c.ep) + "-shard-0.safetensors"));
  }
}

// bf16 mixed precision on 2 ranks with expert parallelism 2 and ZeRO 1 against the
// one-process bf16 run. The expert-parallel layer routes on the host and sends the gates'
// gradient back in bf16, and the ranks sum gradients in another order, so the two runs
// round differently: each is a bf16 run of the same model, as close to the other as bf16
// runs are to f32 (1-4% per gradient tensor after one step, 2.5e-4 in the losses of a
// 20-step run; README, mixed precision). Tolerances: losses and gradient norms 2e-2
// relative, the final adapters 5e-2 of each tensor's largest element (measured: at most
// 2.6%, a few bf16 ulps of the exported weights; a lost expert or a wrong gate moves them
// by O(1)).
TEST(TrainRanksTest, Bf16ExpertParallelismTrainsTheOneProcessBf16Model) {
  RunShape shape;
  shape.dtype = "bf16";
  const std::string& ref = OneProcess(shape);
  const std::string dir = FreshDir("bf16_ranks2_ep2_zero1");
  const CommandResult r = RunRanks(2, WriteRunConfig(dir, shape),
                                   {"--set=parallel.ep=2", "--set=parallel.zero_stage=1"});
  ASSERT_TRUE(ExitedWith(r, 0));
  EXPECT_NE(r.stdout_text.find("2 expert-parallel"), std::string::npos) << r.Describe();
  RunShape f32_shape = shape;
  f32_shape.dtype = "f32";
  ExpectWithinBf16Noise(OneProcess(f32_shape), ref, dir, 4.0);
  ExpectSameLosses(ref, dir, 2e-2);
}

// bf16 full fine-tuning on 2 ranks with ZeRO 2 (the f32 masters, optimizer state and f32
// gradients of every bf16 weight sharded) against the one-process bf16 run, with the
// bounds of the expert-parallel bf16 test above. A shard whose update is lost or applied
// twice moves its weights by about lr x steps, far above the bf16 noise of the merged
// weights.
TEST(TrainRanksTest, Bf16FullFineTuningWithZeroTrainsTheOneProcessBf16Model) {
  RunShape shape;
  shape.adapter = "adapter { kind: FULL }";
  shape.max_steps = 6;
  shape.dtype = "bf16";
  const std::string ref = FreshDir("full_bf16_one_process");
  ASSERT_TRUE(ExitedWith(RunRanks(1, WriteRunConfig(ref, shape)), 0));
  RunShape f32_shape = shape;
  f32_shape.dtype = "f32";
  const std::string f32 = FreshDir("full_f32_one_process");
  ASSERT_TRUE(ExitedWith(RunRanks(1, WriteRunConfig(f32, f32_shape)), 0));
  const std::string dir = FreshDir("full_bf16_ranks2_zero2");
  const CommandResult r = RunRanks(2, WriteRunConfig(dir, shape),
                                   {"--set=parallel.zero_stage=2", "--set=parallel.bucket_mb=0.01"});
  ASSERT_TRUE(ExitedWith(r, 0));
  ExpectWithinBf16Noise(f32, ref, dir, 4.0, "/merged/model.safetensors");
  ExpectSameLosses(ref, dir, 2e-2);
}

TEST(TrainRanksTest, TopKWithCapacityUnderExpertParallelismTrainsTheOneProcessModel) {
  RunShape shape;
  shape.max_steps = 6;
  shape.adapter = std::string(kTinyPmolAdapter).replace(std::string(kTinyPmolAdapter).find("  dropout"), 0,
                                                    "  top_k: 2\n  capacity_factor: 1.0\n");
  const std::string ref = FreshDir("topk_one_process");
  ASSERT_TRUE(ExitedWith(RunRanks(1, WriteRunConfig(ref, shape)), 0));
  const std::string dir = FreshDir("topk_ranks4_ep2");
  const CommandResult r = RunRanks(4, WriteRunConfig(dir, shape), {"--set=parallel.ep=2"});
  ASSERT_TRUE(ExitedWith(r, 0));
  ExpectSameAdapter(ref, dir);
  ExpectSameLosses(ref, dir);
}

// Precomputed reference log-probs (202 train pairs: 101 micro-batches, uneven over 4
// ranks) and evaluation (6 pairs: 3 micro-batches, so one rank of each expert-parallel
// group evaluates a batch it drops) under expert parallelism.
TEST(TrainRanksTest, ExpertParallelismWithPrecomputedReferenceAndEvaluation) {
  RunShape shape;
  shape.max_steps = 4;
  const std::vector<std::string> precompute = {"--set=objective.precompute_reference=true"};
  const std::string ref = FreshDir("precompute_one_process");
  ASSERT_TRUE(ExitedWith(RunRanks(1, WriteRunConfig(ref, shape), precompute), 0));
  const std::string dir = FreshDir("precompute_ranks4_ep2");
  std::vector<std::string> flags = precompute;
  flags.push_back("--set=parallel.ep=2");
  ASSERT_TRUE(ExitedWith(RunRanks(4, WriteRunConfig(dir, shape), flags), 0));
  ExpectSameAdapter(ref, dir);
  ExpectSameLosses(ref, dir);
  std::ifstream want_in(ref + "/eval.json"), got_in(dir + "/eval.json");
  const nlohmann::json want = nlohmann::json::parse(want_in), got = nlohmann::json::parse(got_in);
  EXPECT_EQ(got["overall"]["pairs"], want["overall"]["pairs"]);
  for (const char* part : {"main", "group", "total"}) {
    const double w = want["loss"][part].get<double>();
    EXPECT_NEAR(got["loss"][part].get<double>(), w, kRelTol * std::abs(w)) << part;
  }
  const double margin = want["overall"]["margin"].get<double>();
  EXPECT_NEAR(got["overall"]["margin"].get<double>(), margin, kRelTol * std::abs(margin));
}

TEST(TrainRanksTest, ExpertParallelCheckpointResumesWithAnotherDpButNotAnotherEp) {
  const RunShape shape;
  const std::string& ref = OneProcess(shape);
  const std::string dir = FreshDir("ep_resharded");
  const std::string config = WriteRunConfig(dir, shape);
  ASSERT_TRUE(ExitedWith(RunRanks(4, config, {"--set=parallel.ep=2", "--set=parallel.zero_stage=2"}), 0));
  fs::remove_all(dir + "/checkpoints/step-00000008");
  fs::remove_all(dir + "/adapter");
  // Another ep: refused, naming the reason; nothing is lost.
  const CommandResult other_ep = RunRanks(2, config);
  EXPECT_FALSE(ExitedWith(other_ep, 0));
  EXPECT_TRUE(StderrMentions(other_ep, {"parallel.ep"})) << other_ep.Describe();
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/step-00000004"));
  // dp 2 -> 1 with the same ep: the expert optimizer shards are re-cut.
  const CommandResult r = RunRanks(2, config, {"--set=parallel.ep=2", "--set=parallel.zero_stage=1"});
  ASSERT_TRUE(ExitedWith(r, 0));
  EXPECT_NE(r.stdout_text.find("step 4"), std::string::npos) << r.Describe();
  EXPECT_NE(r.stdout_text.find("done: 8 steps"), std::string::npos) << r.Describe();
  ExpectSameAdapter(ref, dir);
}

TEST(TrainRanksTest, PreferenceAwareSamplingReportsItsAllToAllBytes) {
  // Top-1 routing, so that a row moves only to the rank of its chosen expert.
  RunShape shape;
  shape.max_steps = 4;
  shape.adapter = std::string(kTinyPmolAdapter).replace(std::string(kTinyPmolAdapter).find("  dropout"), 0, "  top_k: 1\n");
  double bytes[2] = {0, 0};
  for (const bool aware : {false, true}) {
    const std::string dir = FreshDir(aware ? "aware" : "unaware");
    const CommandResult r =
        RunRanks(2, WriteRunConfig(dir, shape),
                 {"--set=parallel.ep=2", std::string("--set=parallel.preference_aware_sampling=") + (aware ? "true" : "false")});
    ASSERT_TRUE(ExitedWith(r, 0));
    const std::map<int64_t, double> b = TrainMetric(dir, "comm/expert_all_to_all_bytes_per_step");
    ASSERT_EQ(b.size(), 4u);
    for (const auto& [step, v] : b) bytes[aware] += v;
    EXPECT_GT(bytes[aware], 0);
  }
  std::cout << "all-to-all bytes over 4 steps: " << bytes[0] << " without, " << bytes[1]
            << " with preference-aware sampling\n";
}

TEST(TrainRanksTest, WorldSizeErrorsArePrintedOnceByRankZero) {
  const std::string dir = FreshDir("bad_world");
  RunShape shape;
  shape.global_batch = 6;  // not a multiple of 2 pairs x 4 ranks
  const CommandResult r = RunRanks(4, WriteRunConfig(dir, shape));
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"data.global_batch_size = 6", "data.micro_batch_size x ranks = 2 x 4"}));
  EXPECT_EQ(Count(r.stderr_text, "data.global_batch_size"), 1u) << r.Describe();

  // 3 experts cannot fill 4 expert-parallel ranks; ep must divide the world.
  for (const char* ep : {"--set=parallel.ep=4", "--set=parallel.ep=3"}) {
    const CommandResult r = RunRanks(4, WriteRunConfig(dir, RunShape{}), {ep});
    EXPECT_TRUE(ExitedWith(r, 1)) << ep;
    EXPECT_TRUE(StderrMentions(r, {"parallel.ep"})) << ep;
    EXPECT_EQ(Count(r.stderr_text, "parallel.ep"), 1u) << r.Describe();
  }

  // Several ranks on GPUs: each binds its GPU and the world moves to NCCL; without CUDA
  // (this build) or without a GPU (a CUDA build here), that fails on every rank before
  // any other work and is reported once.
  const CommandResult gpu = RunRanks(2, WriteRunConfig(dir, RunShape{}), {"--set=model.device=cuda"});
  EXPECT_TRUE(ExitedWith(gpu, 1));
  const size_t reported = Count(gpu.stderr_text, "built without CUDA support") + Count(gpu.stderr_text, "no usable GPU");
  EXPECT_EQ(reported, 1u) << gpu.Describe();
}

}  // namespace
}  // namespace pmol
