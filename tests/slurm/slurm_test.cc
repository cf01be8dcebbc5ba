// pmol under a real Slurm: a one-node cluster on localhost (launch/slurm/local_cluster.sh:
// munged, slurmctld and slurmd as root, every file under this test's TEST_TMPDIR, seen
// through a short link in /tmp; own ports and job ids), started once for the test binary
// and always stopped at the end (also when an assertion fails, and on SIGTERM / SIGINT /
// SIGABRT / SIGHUP, e.g. Bazel's timeout). It proves:
//   * MpiRanksProbe: `srun --mpi=pmix -n 2` gives Debian's Open MPI one 2-rank world
//     (tests/slurm/mpi_ranks: ranks 0 and 1, size 2, MPI_Allreduce sum 2, both ranks on
//     one node, PMIX_RANK set, which pmol's launcher check looks for), the launch path
//     pmol_train.sbatch relies on;
//   * TemplateTrainsOnTwoRanks: launch/slurm/pmol_train.sbatch, submitted by sbatch with
//     2 CPU ranks (--gpus-per-task=0, its documented CPU mode), runs one 2-rank
//     data-parallel `pmol train` (rank 0 alone prints "2 ranks (" and "done:") whose
//     PMoL adapter matches a one-process `pmol train` of the same config;
//   * UsrOneCheckpointsRequeuesAndResumes: USR1 to the batch script (what
//     --signal=B:USR1@120 sends before the time limit) makes both ranks checkpoint at the
//     same step (ZeRO-1: each rank writes its optimizer shard) and stop, the job requeues
//     itself, its second start resumes from that checkpoint and finishes, and the final
//     adapter matches the uninterrupted one-process run;
//   * ScontrolRequeueResumes: `scontrol requeue` (what an operator or a node failure
//     does) signals the ranks (SIGTERM: they checkpoint and stop), Slurm starts the job
//     again, and the second start resumes from the newest checkpoint and finishes with
//     the uninterrupted one-process weights;
//   * afterwards no job is queued and no daemon or job process is left.
// Tolerance 1e-5 on max |a - b| / max |a|: the 2-rank run sums each rank's float32
// gradients and then all-reduces the two partial sums, where one process sums all
// micro-batches in one sequence; the rounding differs (~1e-7 relative), and Adam carries
// it through the steps (measured here: 2e-7 after 12 steps, 6e-7 to 8e-7 after 300 at
// lr 2e-3, with or without the requeue): a margin of more than 10x. A real fault (a
// lost, repeated or reordered micro-batch, a missed step, a resume from a wrong state)
// moves weights by ~lr = 2e-3, some 1e-3 relative (measured: 301 steps instead of 300
// differ by 3e-3). Longer runs at higher rates drift further apart (6e-3 after 400 steps
// at lr 5e-3: the difference grows exponentially from step ~100 on, as with any change of
// summation order), which is why the runs here stay short and gentle.
// No skip: without Slurm the tests fail, naming launch/setup.sh (which installs it).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "pmol/io/safetensors.h"
#include "tests/launch/pmol_command.h"

extern char** environ;

namespace pmol {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr double kTolerance = 1e-5;     // see the header
constexpr double kJobTimeoutS = 180;    // one job, from submission to its end

std::string Absolute(const std::string& runfile) { return fs::absolute(runfile).lexically_normal().string(); }

// `name` on PATH or in the sbin folders (the daemons live there), or "".
std::string Which(const std::string& name) {
  const char* env = std::getenv("PATH");
  std::string path = std::string(env ? env : "") + ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::stringstream dirs(path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

bool Contains(const std::string& text, const std::string& needle) { return text.find(needle) != std::string::npos; }

int Count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string Tail(const std::string& text, size_t bytes = 4000) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

// Runs a Slurm client (sbatch, srun, scontrol, ...) under `timeout`, so that a cluster
// that stopped answering fails the test instead of hanging it.
CommandResult Slurm(const std::string& tool, const std::vector<std::string>& args, int timeout_s = 60) {
  std::vector<std::string> argv = {Which("timeout"), std::to_string(timeout_s), Which(tool)};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv);
}

// Emergency stop for a test ended by a signal (Bazel's timeout sends SIGTERM): the
// daemons run in sessions of their own and would outlive it. Async-signal-safe: the
// command line is made before the handlers are installed.
std::vector<std::string>* g_stop_args = nullptr;
std::vector<char*>* g_stop_argv = nullptr;

void StopOnSignal(int signal) {
  if (g_stop_argv != nullptr) {
    const pid_t pid = fork();
    if (pid == 0) {
      execv((*g_stop_argv)[0], g_stop_argv->data());
      _exit(127);
    }
    if (pid > 0) {
      int status = 0;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  ::signal(signal, SIG_DFL);
  raise(signal);
}

// The cluster of local_cluster.sh in `dir`: started by the constructor, stopped by the
// destructor (the guard that stops it whatever the tests did).
class LocalCluster {
 public:
  explicit LocalCluster(const std::string& dir) : dir_(dir) {
    script_ = Absolute("launch/slurm/local_cluster.sh");
    g_stop_args = new std::vector<std::string>{Which("bash"), script_, "stop", dir_};
    g_stop_argv = new std::vector<char*>;
    for (std::string& a : *g_stop_args) g_stop_argv->push_back(a.data());
    g_stop_argv->push_back(nullptr);
    for (int s : {SIGTERM, SIGINT, SIGABRT, SIGHUP}) ::signal(s, StopOnSignal);
    started_ = true;  // from here on, stop even a partial start
    CommandResult r = RunProgram({Which("bash"), script_, "start", dir_});
    std::smatch m;
    if (r.exit_code != 0 || r.term_signal != 0 ||
        !std::regex_search(r.stdout_text, m, std::regex("export SLURM_CONF=(\\S+)"))) {
      error_ = "local_cluster.sh start failed:\n" + r.Describe() + Logs();
      return;
    }
    conf_ = m[1];
    // Only this cluster: no job or allocation of a cluster the test may run inside.
    std::vector<std::string> inherited;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string var(*e);
      const std::string name = var.substr(0, var.find('='));
      if (name.rfind("SLURM_", 0) == 0 || name.rfind("SBATCH_", 0) == 0 || name.rfind("SALLOC_", 0) == 0 ||
          name.rfind("SRUN_", 0) == 0 || name.rfind("SQUEUE_", 0) == 0) {
        inherited.push_back(name);
      }
    }
    for (const std::string& name : inherited) unsetenv(name.c_str());
    setenv("SLURM_CONF", conf_.c_str(), 1);
    state_ = fs::path(conf_).parent_path().string();
  }

  ~LocalCluster() { Stop(); }

  // Stops the cluster (once); returns local_cluster.sh's report.
  CommandResult Stop() {
    CommandResult r;
    if (!started_) return r;
    started_ = false;
    r = RunProgram({Which("bash"), script_, "stop", dir_});
    for (int s : {SIGTERM, SIGINT, SIGABRT, SIGHUP}) ::signal(s, SIG_DFL);
    return r;
  }

  const std::string& error() const { return error_; }
  // The folder the daemons use (a short link to `dir` when `dir` is deep).
  const std::string& state() const { return state_; }

  // The daemons' logs, for failure messages.
  std::string Logs() const {
    std::string out;
    for (const char* log : {"slurmctld.log", "slurmd.log", "munged.log"}) {
      out += std::string("\n--- ") + log + " ---\n" + Tail(ReadFile(dir_ + "/log/" + log), 3000);
    }
    return out;
  }

 private:
  std::string dir_, script_, conf_, state_, error_;
  bool started_ = false;
};

// Processes that carry the cluster's mark (its daemons, slurmstepd) or whose pid files
// name a live process.
std::vector<std::string> Leftovers(const std::string& dir, const std::string& state) {
  std::vector<std::string> found;
  const std::string mark = "PMOL_LOCAL_CLUSTER_STATE=" + state;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string environ_text = ReadFile(entry.path().string() + "/environ");
    std::stringstream vars(environ_text);
    for (std::string var; std::getline(vars, var, '\0');) {
      if (var == mark) {
        found.push_back(pid + " " + ReadFile(entry.path().string() + "/comm"));
        break;
      }
    }
  }
  for (const char* pidfile : {"/slurmctld.pid", "/slurmd.pid", "/munge/munged.pid"}) {
    const std::string text = ReadFile(dir + pidfile);
    if (!text.empty() && kill(std::atoi(text.c_str()), 0) == 0) found.push_back(std::string(pidfile) + " " + text);
  }
  return found;
}

std::string Field(const std::string& text, const std::string& name) {
  std::smatch m;
  return std::regex_search(text, m, std::regex("(^|\\s)" + name + "=(\\S*)")) ? m[2].str() : "";
}

bool Finished(const std::string& state) {
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                        "DEADLINE"}) {
    if (state == s) return true;
  }
  return false;
}

class SlurmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string missing;
    for (const char* tool : {"sbatch", "srun", "scontrol", "scancel", "squeue", "sinfo", "slurmctld", "slurmd",
                             "munged", "mungekey"}) {
      if (Which(tool).empty()) missing += std::string(" ") + tool;
    }
    if (!missing.empty()) {
      error_ = "Slurm is not installed (not found:" + missing +
               "): run launch/setup.sh, which installs Debian's slurm-wlm and munge";
      return;
    }
    if (Which("timeout").empty() || Which("bash").empty()) {
      error_ = "bash and timeout (coreutils) are needed";
      return;
    }
    root_ = FreshDir("slurm");
    cluster_dir_ = root_ + "/cluster";
    cluster_ = new LocalCluster(cluster_dir_);
    if (!cluster_->error().empty()) {
      error_ = cluster_->error();
      return;
    }
    // The demo corpus and a tiny Llama (as in tests/train/train_run_test.cc).
    data_ = root_ + "/data";
    model_ = root_ + "/model";
    CommandResult demo = RunPmol({"make-demo-data", "--out=" + data_, "--seed=2"});
    if (demo.exit_code != 0) {
      error_ = "make-demo-data failed:\n" + demo.Describe();
      return;
    }
    nlohmann::json config = TinyTrainLlamaConfig();
    WriteFile(model_ + ".config.json", config.dump(2));
    CommandResult init = RunPmol({"init-model", "--hf-config=" + model_ + ".config.json", "--out=" + model_,
                                  "--seed=5", "--dtype=f32"});
    if (init.exit_code != 0) error_ = "init-model failed:\n" + init.Describe();
  }

  static void TearDownTestSuite() {
    if (cluster_ == nullptr) return;
    const std::string state = cluster_->state();
    CommandResult jobs = Slurm("squeue", {"-h", "-o", "%A %T"});
    EXPECT_EQ(jobs.stdout_text, "") << "jobs left in the queue";
    CommandResult stop = cluster_->Stop();
    EXPECT_TRUE(ExitedWith(stop, 0));
    delete cluster_;
    cluster_ = nullptr;
    const std::vector<std::string> left = Leftovers(cluster_dir_, state);
    std::string names;
    for (const std::string& p : left) names += "\n  " + p;
    EXPECT_TRUE(left.empty()) << "processes of the cluster left after local_cluster.sh stop:" << names;
    EXPECT_FALSE(fs::is_symlink(fs::symlink_status(state))) << "the short link " << state << " was not removed";
  }

  void SetUp() override { ASSERT_TRUE(error_.empty()) << error_; }

  // A PMoL DPO run: micro-batches of 2 pairs, 8 pairs per optimizer step (2 ranks: 2
  // accumulation steps each; 1 process: 4), dropout on (its masks must not depend on
  // which rank draws a pair), one thread per rank.
  static std::string PmolConfig(const std::string& out, int max_steps, int checkpoint_every) {
    return R"(seed: 3
output_dir: ")" + out + R"("
model { path: ")" + model_ + R"(" threads: 1 }
)" + std::string(kTinyPmolAdapter) + R"(
objective { kind: DPO beta: 0.1 }
optimizer { lr: 2e-3 warmup_steps: 2 max_steps: )" + std::to_string(max_steps) + R"( weight_decay: 0.01 }
data {
  tokenizer: ")" + data_ + R"(/tokenizer.json"
  preference_names: ["helpfulness", "harmlessness"]
  train { path: ")" + data_ + R"(/preference/helpfulness/eval.jsonl" }
  train { path: ")" + data_ + R"(/preference/harmlessness/eval.jsonl" }
  eval { path: ")" + data_ + R"(/preference/helpfulness/eval.jsonl" }
  max_length: 96
  max_prompt_length: 64
  micro_batch_size: 2
  global_batch_size: 8
}
eval { every_steps: 0 max_pairs: 8 }
checkpoint { every_steps: )" + std::to_string(checkpoint_every) + R"( keep_last: 2 }
logging { every_steps: 5 }
)";
  }

  // Writes the config of a run in `dir` (its output_dir) and returns its path.
  static std::string WriteRun(const std::string& dir, int max_steps, int checkpoint_every) {
    const std::string path = dir + "/run.textproto";
    WriteFile(path, PmolConfig(dir, max_steps, checkpoint_every));
    return path;
  }

  // sbatch of pmol_train.sbatch for 2 CPU ranks on the one node; returns the job id.
  static std::string Submit(const std::string& config, const std::string& log, const std::vector<std::string>& flags) {
    std::vector<std::string> args = {"--parsable",
                                     "--nodes=1",
                                     "--ntasks=2",
                                     "--ntasks-per-node=2",
                                     "--cpus-per-task=1",
                                     "--gpus-per-task=0",
                                     "--time=10:00",
                                     "--output=" + log,
                                     "--export=ALL,PMOL_CONFIG=" + config + ",PMOL_BIN=" + Absolute(PmolPath()),
                                     Absolute("launch/slurm/pmol_train.sbatch")};
    args.insert(args.end(), flags.begin(), flags.end());
    CommandResult r = Slurm("sbatch", args);
    std::smatch m;
    const std::string out = r.stdout_text;
    if (r.exit_code != 0 || !std::regex_search(out, m, std::regex("^(\\d+)"))) {
      ADD_FAILURE() << "sbatch failed:\n" << r.Describe() << cluster_->Logs();
      return "";
    }
    return m[1];
  }

  static std::string ShowJob(const std::string& id) { return Slurm("scontrol", {"show", "job", id}).stdout_text; }

  // Polls `scontrol show job` until the job has ended (requeues pass through PENDING),
  // at most kJobTimeoutS; returns its last state.
  static std::string WaitForJob(const std::string& id, Clock::time_point submitted) {
    std::string state;
    while (std::chrono::duration<double>(Clock::now() - submitted).count() < kJobTimeoutS) {
      state = Field(ShowJob(id), "JobState");
      if (Finished(state)) return state;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return "still " + state + " after " + std::to_string(static_cast<int>(kJobTimeoutS)) + " s";
  }

  // What to read when a job went wrong: its record, its log and the daemons' logs.
  static std::string Report(const std::string& id, const std::string& log) {
    return "\n--- scontrol show job " + id + " ---\n" + ShowJob(id) + "--- job log " + log + " ---\n" +
           Tail(ReadFile(log), 8000) + cluster_->Logs();
  }

  // Waits until run `dir` of job `id` has written its first checkpoint (at most
  // kJobTimeoutS from `submitted`); fails when the job ends first or time runs out.
  static ::testing::AssertionResult FirstCheckpointWritten(const std::string& id, const std::string& dir,
                                                           const std::string& log, Clock::time_point submitted) {
    while (std::chrono::duration<double>(Clock::now() - submitted).count() < kJobTimeoutS) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir + "/checkpoints", ec)) {
        if (e.path().filename().string().rfind("step-", 0) == 0) return ::testing::AssertionSuccess();
      }
      if (Finished(Field(ShowJob(id), "JobState"))) {
        return ::testing::AssertionFailure() << "the job ended before its first checkpoint" << Report(id, log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return ::testing::AssertionFailure() << "no checkpoint after " << kJobTimeoutS << " s" << Report(id, log);
  }

  // A one-process `pmol train` of the same config: the reference.
  static void TrainOneProcess(const std::string& config) {
    CommandResult r = RunPmol({"train", "--config=" + config});
    ASSERT_TRUE(ExitedWith(r, 0));
  }

  static LocalCluster* cluster_;
  static std::string error_, root_, cluster_dir_, data_, model_;
};

LocalCluster* SlurmTest::cluster_ = nullptr;
std::string SlurmTest::error_, SlurmTest::root_, SlurmTest::cluster_dir_, SlurmTest::data_, SlurmTest::model_;

// max |a - b| / max |a| over every tensor of two adapter files, which must hold the same
// tensors (names and shapes); fails the test and returns infinity otherwise.
double RelativeDifference(const std::string& a_path, const std::string& b_path) {
  auto a = SafetensorsFile::Open(a_path);
  auto b = SafetensorsFile::Open(b_path);
  if (!a.ok() || !b.ok()) {
    ADD_FAILURE() << a.status() << " / " << b.status();
    return INFINITY;
  }
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  double max_diff = 0, max_abs = 0;
  EXPECT_EQ((*a)->entries().size(), (*b)->entries().size());
  for (const SafetensorsEntry& e : (*a)->entries()) {
    const SafetensorsEntry* other = (*b)->Find(e.name);
    if (other == nullptr || other->shape != e.shape) {
      ADD_FAILURE() << e.name << ": missing or of another shape in " << b_path;
      return INFINITY;
    }
    const std::vector<double> x = (*a)->Load(e.name, cpu, DType::kF64).value().ToDoubles();
    const std::vector<double> y = (*b)->Load(e.name, cpu, DType::kF64).value().ToDoubles();
    for (size_t i = 0; i < x.size(); ++i) {
      max_diff = std::max(max_diff, std::abs(x[i] - y[i]));
      max_abs = std::max(max_abs, std::abs(x[i]));
    }
  }
  EXPECT_GT(max_abs, 0) << a_path << " is all zeros";
  return max_abs > 0 ? max_diff / max_abs : INFINITY;
}

const char kAdapter[] = "/adapter/adapter_model.safetensors";

TEST_F(SlurmTest, MpiRanksProbe) {
  CommandResult r = Slurm("srun", {"--mpi=pmix", "-n", "2", Absolute("tests/slurm/mpi_ranks")}, 120);
  ASSERT_TRUE(ExitedWith(r, 0)) << cluster_->Logs();
  std::map<std::string, std::string> lines;  // rank -> line
  std::stringstream out(r.stdout_text);
  for (std::string line; std::getline(out, line);) {
    if (line.rfind("rank=", 0) == 0) lines[Field(line, "rank")] = line;
  }
  ASSERT_EQ(lines.size(), 2u) << r.Describe();
  for (const std::string rank : {"0", "1"}) {
    ASSERT_EQ(lines.count(rank), 1u) << "no line of rank " << rank << "\n" << r.Describe();
    const std::string& line = lines[rank];
    EXPECT_EQ(Field(line, "size"), "2") << line;
    EXPECT_EQ(Field(line, "sum"), "2") << line;
    EXPECT_EQ(Field(line, "local_size"), "2") << line;
    EXPECT_EQ(Field(line, "local_rank"), rank) << line;
    EXPECT_EQ(Field(line, "SLURM_PROCID"), rank) << line;  // Slurm's rank is MPI's
    EXPECT_EQ(Field(line, "PMIX_RANK"), rank) << line;     // pmol's launcher check sees PMIx
  }
}

TEST_F(SlurmTest, TemplateTrainsOnTwoRanks) {
  const std::string dir = FreshDir("slurm_two_ranks");
  const std::string config = WriteRun(dir, 12, 6);
  const std::string log = dir + "/job.log";
  const Clock::time_point submitted = Clock::now();
  const std::string id = Submit(config, log, {});
  ASSERT_FALSE(id.empty());
  const std::string state = WaitForJob(id, submitted);
  const std::string text = ReadFile(log);
  ASSERT_EQ(state, "COMPLETED") << Report(id, log);
  std::printf("job %s: %.1f s from sbatch to its end\n", id.c_str(),
              std::chrono::duration<double>(Clock::now() - submitted).count());
  EXPECT_TRUE(Contains(text, "start 1 (restarts so far: 0)")) << Report(id, log);
  EXPECT_TRUE(Contains(text, "2 ranks, srun --mpi=pmix")) << Report(id, log);
  // pmol's own line, printed by rank 0 only.
  EXPECT_EQ(Count(text, "2 ranks (2 on this node, 1 threads each)"), 1) << Report(id, log);
  EXPECT_EQ(Count(text, "done: 12 steps"), 1) << Report(id, log);
  EXPECT_FALSE(Contains(text, "requeueing")) << Report(id, log);
  ASSERT_TRUE(fs::exists(dir + kAdapter)) << Report(id, log);

  const std::string ref = FreshDir("slurm_two_ranks_reference");
  TrainOneProcess(WriteRun(ref, 12, 6));
  const double diff = RelativeDifference(ref + kAdapter, dir + kAdapter);
  std::printf("2 ranks under Slurm vs 1 process, 12 steps: max |a - b| / max |a| = %.3g\n", diff);
  EXPECT_LE(diff, kTolerance);
}

TEST_F(SlurmTest, UsrOneCheckpointsRequeuesAndResumes) {
  // 300 steps (~6 s on 2 ranks here): USR1 goes out as soon as the first checkpoint (step
  // 5) is there, leaving the run ~98% of its steps to receive it.
  constexpr int kSteps = 300;
  const std::string dir = FreshDir("slurm_requeue");
  const std::string config = WriteRun(dir, kSteps, 5);
  const std::string log = dir + "/job.log";
  const Clock::time_point submitted = Clock::now();
  // A pmol flag through the template: ZeRO-1, so the checkpoint is written by both ranks.
  const std::string id = Submit(config, log, {"--set=parallel.zero_stage=1"});
  ASSERT_FALSE(id.empty());

  ASSERT_TRUE(FirstCheckpointWritten(id, dir, log, submitted));
  CommandResult usr1 = Slurm("scancel", {"--signal=USR1", "--batch", id});
  ASSERT_TRUE(ExitedWith(usr1, 0)) << Report(id, log);

  const std::string state = WaitForJob(id, submitted);
  const std::string text = ReadFile(log);
  ASSERT_EQ(state, "COMPLETED") << Report(id, log);
  std::printf("job %s: %.1f s from sbatch to its end, requeue included\n", id.c_str(),
              std::chrono::duration<double>(Clock::now() - submitted).count());
  ASSERT_TRUE(Contains(text, "SIGUSR1")) << "the run finished before USR1 reached the batch script"
                                         << Report(id, log);
  EXPECT_EQ(Field(ShowJob(id), "Restarts"), "1") << Report(id, log);
  // First start: both ranks stopped at the same step with a checkpoint (rank 0 reports).
  std::smatch stopped;
  ASSERT_TRUE(std::regex_search(text, stopped, std::regex("stopped by a signal after step (\\d+)")))
      << Report(id, log);
  const int stop_step = std::stoi(stopped[1]);
  EXPECT_GT(stop_step, 0);
  EXPECT_LT(stop_step, kSteps);
  EXPECT_TRUE(Contains(text, "srun exited with 1")) << Report(id, log);
  EXPECT_TRUE(Contains(text, "requeueing job " + id + " (restart 1 of 3)")) << Report(id, log);
  // Second start: resumes from that checkpoint and finishes.
  EXPECT_TRUE(Contains(text, "start 2 (restarts so far: 1)")) << Report(id, log);
  char step_dir[32];
  std::snprintf(step_dir, sizeof(step_dir), "step-%08d", stop_step);
  EXPECT_TRUE(Contains(text, "resumed from " + dir + "/checkpoints/" + step_dir)) << Report(id, log);
  EXPECT_EQ(Count(text, "2 ranks (2 on this node, 1 threads each)"), 2) << Report(id, log);
  EXPECT_EQ(Count(text, "done: " + std::to_string(kSteps) + " steps"), 1) << Report(id, log);
  EXPECT_TRUE(Contains(text, "srun exited with 0")) << Report(id, log);
  ASSERT_TRUE(fs::exists(dir + kAdapter)) << Report(id, log);

  const std::string ref = FreshDir("slurm_requeue_reference");
  TrainOneProcess(WriteRun(ref, kSteps, 5));
  const double diff = RelativeDifference(ref + kAdapter, dir + kAdapter);
  std::printf("2 ranks, stopped at step %d, requeued and resumed, vs 1 process uninterrupted, %d steps: "
              "max |a - b| / max |a| = %.3g\n",
              stop_step, kSteps, diff);
  EXPECT_LE(diff, kTolerance);
}

TEST_F(SlurmTest, ScontrolRequeueResumes) {
  constexpr int kSteps = 300;
  const std::string dir = FreshDir("slurm_scontrol_requeue");
  const std::string config = WriteRun(dir, kSteps, 5);
  const std::string log = dir + "/job.log";
  const Clock::time_point submitted = Clock::now();
  const std::string id = Submit(config, log, {"--set=parallel.zero_stage=2"});
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(FirstCheckpointWritten(id, dir, log, submitted));
  CommandResult requeue = Slurm("scontrol", {"requeue", id});
  ASSERT_TRUE(ExitedWith(requeue, 0)) << Report(id, log);

  const std::string state = WaitForJob(id, submitted);
  const std::string text = ReadFile(log);
  ASSERT_EQ(state, "COMPLETED") << Report(id, log);
  std::printf("job %s: %.1f s from sbatch to its end, scontrol requeue included\n", id.c_str(),
              std::chrono::duration<double>(Clock::now() - submitted).count());
  EXPECT_EQ(Field(ShowJob(id), "Restarts"), "1") << Report(id, log);
  EXPECT_TRUE(Contains(text, "start 2 (restarts so far: 1)")) << Report(id, log);
  EXPECT_TRUE(Contains(text, "resumed from " + dir + "/checkpoints/step-")) << Report(id, log);
  EXPECT_EQ(Count(text, "done: " + std::to_string(kSteps) + " steps"), 1) << Report(id, log);
  ASSERT_TRUE(fs::exists(dir + kAdapter)) << Report(id, log);

  const std::string ref = FreshDir("slurm_scontrol_requeue_reference");
  TrainOneProcess(WriteRun(ref, kSteps, 5));
  const double diff = RelativeDifference(ref + kAdapter, dir + kAdapter);
  std::printf("2 ranks, requeued by scontrol and resumed, vs 1 process uninterrupted, %d steps: "
              "max |a - b| / max |a| = %.3g\n",
              kSteps, diff);
  EXPECT_LE(diff, kTolerance);
}

}  // namespace
}  // namespace pmol
