// End-to-end tests of `pmol train` (the binary, run as a subprocess) on a tiny Llama and
// the demo corpus:
//   * a run killed with SIGKILL at random moments and resumed (again and again) ends with
//     the same adapter and optimizer state, byte for byte, as an uninterrupted run, and its
//     metrics log holds every step exactly once;
//   * every logged step reports its peak device memory (memory/peak_bytes) and the
//     memory in use (memory/in_use_bytes), bounded below by the trainable parameters and
//     their gradients, and the progress line shows the peak;
//   * SIGTERM stops with a checkpoint, and running the command again finishes the same run,
//     in f32 and in bf16 mixed precision (bf16 adapters, f32 masters in the checkpoint);
//   * a corrupt newest checkpoint is skipped with a warning, the previous one resumes, and
//     the run still ends with the same bytes;
//   * a non-finite loss stops the run with a message naming optimizer.max_skipped_steps;
//   * --set overrides, bad overrides and a checkpoint of another training are clear errors;
//   * LoRA, full fine-tuning, SFT and reward runs write their take-away folders (adapter,
//     PEFT, merged HF weights that `pmol forward` loads).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

namespace fs = std::filesystem;

const TrainFixture& Shared() { return SharedTrainFixture("train_shared"); }

// A PMoL DPO run over two preferences with dropout and accumulation, so that resuming
// must restore the sampler, the optimizer, the schedule and the dropout masks.
std::string PmolConfig(const std::string& out, int max_steps = 24) {
  const TrainFixture& f = Shared();
  return R"(seed: 3
output_dir: ")" + out + R"("
model { path: ")" + f.model + R"(" threads: 2 }
)" + std::string(kTinyPmolAdapter) + R"(
objective { kind: DPO beta: 0.1 }
optimizer { lr: 5e-3 warmup_steps: 2 max_steps: )" + std::to_string(max_steps) + R"( grad_accumulation_steps: 2 weight_decay: 0.01 }
data {
  tokenizer: ")" + f.data + R"(/tokenizer.json"
  preference_names: ["helpfulness", "harmlessness"]
  train { path: ")" + f.data + R"(/preference/helpfulness/eval.jsonl" }
  train { path: ")" + f.data + R"(/preference/harmlessness/eval.jsonl" }
  eval { path: ")" + f.data + R"(/preference/helpfulness/eval.jsonl" }
  max_length: 96
  max_prompt_length: 64
  micro_batch_size: 3
}
eval { every_steps: 8 max_pairs: 6 }
checkpoint { every_steps: 3 keep_last: 2 }
logging { every_steps: 1 }
)";
}

std::string WriteConfig(const std::string& dir, const std::string& text) {
  const std::string path = dir + "/run.textproto";
  WriteFile(path, text);
  return path;
}

std::string Bytes(const std::string& path) { return ReadFile(path); }

// Steps of the "train" lines of a metrics JSONL, in order.
std::vector<int64_t> TrainSteps(const std::string& path) {
  std::vector<int64_t> steps;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("split", "") == "train") steps.push_back(j["step"].get<int64_t>());
  }
  return steps;
}

// The uninterrupted reference run, made once.
const std::string& Reference() {
  static const std::string* dir = [] {
    auto* d = new std::string(FreshDir("reference"));
    CommandResult r = RunPmol({"train", "--config=" + WriteConfig(*d, PmolConfig(*d))});
    EXPECT_TRUE(ExitedWith(r, 0));
    EXPECT_NE(r.stdout_text.find("step 24/24"), std::string::npos) << r.Describe();
    EXPECT_NE(r.stdout_text.find(" tok/s | mem "), std::string::npos) << r.Describe();
    return d;
  }();
  return *dir;
}

void ExpectSameFinalState(const std::string& dir, const std::string& ref = Reference()) {
  const std::string adapter = "/adapter/adapter_model.safetensors";
  ASSERT_TRUE(fs::exists(dir + adapter));
  EXPECT_TRUE(Bytes(ref + adapter) == Bytes(dir + adapter)) << "final adapters differ";
  const std::string last = "/checkpoints/step-00000024/";
  EXPECT_TRUE(Bytes(ref + last + "optimizer-shard-0.safetensors") == Bytes(dir + last + "optimizer-shard-0.safetensors"));
  EXPECT_TRUE(Bytes(ref + last + "trainable.safetensors") == Bytes(dir + last + "trainable.safetensors"));
  std::vector<int64_t> want(24);
  for (int i = 0; i < 24; ++i) want[i] = i + 1;
  EXPECT_EQ(TrainSteps(dir + "/metrics.jsonl"), want);
}

TEST(TrainRunTest, WritesOutputsMetricsAndTensorBoard) {
  const std::string& ref = Reference();
  for (const char* file : {"/adapter/adapter_model.safetensors", "/adapter/adapter_config.json",
                           "/eval.json", "/metrics.jsonl", "/run_config.textproto"}) {
    EXPECT_TRUE(fs::exists(ref + file)) << file;
  }
  EXPECT_FALSE(fs::exists(ref + "/peft")) << "PMoL has no PEFT form";
  bool events = false;
  for (const auto& e : fs::directory_iterator(ref + "/tensorboard")) {
    events |= e.path().filename().string().find("tfevents") != std::string::npos;
  }
  EXPECT_TRUE(events);
  // keep_last 2: only the two newest checkpoints remain.
  std::vector<std::string> checkpoints;
  for (const auto& e : fs::directory_iterator(ref + "/checkpoints")) checkpoints.push_back(e.path().filename());
  std::sort(checkpoints.begin(), checkpoints.end());
  EXPECT_EQ(checkpoints, (std::vector<std::string>{"step-00000021", "step-00000024"}));
}

// Elements of every tensor in a safetensors file (its header's shapes).
int64_t SafetensorsElements(const std::string& path) {
  const std::string bytes = ReadFile(path);
  if (bytes.size() < 8) return -1;
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<unsigned char>(bytes[i]);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size));
  int64_t elements = 0;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    int64_t n = 1;
    for (const auto& d : entry.at("shape")) n *= d.get<int64_t>();
    elements += n;
  }
  return elements;
}

// Every logged step reports its peak device memory: at least the trainable parameters
// and their gradients (f32 on CPU, held by the backend through every step; the frozen
// model is mmap'ed, not allocated), and at least the memory in use at the window's end.
TEST(TrainRunTest, MetricsReportPeakDeviceMemory) {
  const std::string& ref = Reference();
  const int64_t trainable = SafetensorsElements(ref + "/checkpoints/step-00000024/trainable.safetensors");
  ASSERT_GT(trainable, 0);
  const double params_and_grads = 2.0 * 4.0 * static_cast<double>(trainable);
  std::ifstream in(ref + "/metrics.jsonl");
  std::string line, last;
  int lines = 0;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("split", "") != "train") continue;
    ++lines;
    last = line;
    ASSERT_TRUE(j.contains("memory/peak_bytes")) << line;
    ASSERT_TRUE(j.contains("memory/in_use_bytes")) << line;
    const double peak = j["memory/peak_bytes"].get<double>(), in_use = j["memory/in_use_bytes"].get<double>();
    EXPECT_GT(peak, 0) << line;
    EXPECT_GE(peak, in_use) << line;
    EXPECT_GE(in_use, params_and_grads) << line;
    // The step's activations come on top of what stays allocated.
    EXPECT_GT(peak, in_use) << line;
  }
  EXPECT_EQ(lines, 24);
  std::cout << "[   INFO   ] last step: " << last << "\n[   INFO   ] trainable parameters and gradients: "
            << params_and_grads << " bytes\n";
}

TEST(TrainRunTest, KilledAtRandomMomentsAndResumedEndsBitIdentical) {
  const std::string& ref = Reference();
  (void)ref;
  const std::string dir = FreshDir("killed");
  const std::string config = WriteConfig(dir, PmolConfig(dir));
  // How long an uninterrupted run takes here, to spread the kills over it.
  const auto t0 = std::chrono::steady_clock::now();
  RunPmol({"train", "--config=" + WriteConfig(FreshDir("timing"), PmolConfig(FreshDir("timing")))});
  const double run_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::mt19937 rng(17);
  std::uniform_real_distribution<double> delay(0.05, std::max(0.3, run_seconds));
  int kills = 0, resumes = 0;
  for (int attempt = 0; attempt < 40; ++attempt) {
    RunningProgram p = StartProgram({PmolPath(), "train", "--config=" + config});
    std::this_thread::sleep_for(std::chrono::duration<double>(delay(rng)));
    kill(p.pid, SIGKILL);
    CommandResult r = WaitProgram(p);
    // A run that got as far as loading a checkpoint says so before it trains.
    if (r.stdout_text.find("resumed from") != std::string::npos) ++resumes;
    if (r.term_signal == SIGKILL) {
      ++kills;
      continue;
    }
    ASSERT_TRUE(ExitedWith(r, 0));
    if (kills >= 6 && resumes >= 3) break;  // enough kills landed mid-run; this run finished
    // Finished before the kill: start over to get more kills in.
    fs::remove_all(dir + "/checkpoints");
  }
  EXPECT_GE(kills, 6);
  EXPECT_GE(resumes, 3) << "the kills must land after checkpoints were written";
  // One more run (resumes from the final checkpoint) must leave everything as it is.
  ASSERT_TRUE(ExitedWith(RunPmol({"train", "--config=" + config}), 0));
  ExpectSameFinalState(dir);
}

TEST(TrainRunTest, SigtermStopsWithACheckpointAndTheRunResumes) {
  const std::string dir = FreshDir("sigterm");
  const std::string config = WriteConfig(dir, PmolConfig(dir));
  RunningProgram p = StartProgram({PmolPath(), "train", "--config=" + config});
  for (int i = 0; i < 600 && ReadFile(p.stdout_path).find("step 4/24") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(p.pid, SIGTERM);
  CommandResult r = WaitProgram(p);
  if (r.exit_code == 0) GTEST_SKIP() << "the run finished before SIGTERM arrived";
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"stopped by a signal after step", "run the same command again"}));
  CommandResult resumed = RunPmol({"train", "--config=" + config});
  ASSERT_TRUE(ExitedWith(resumed, 0));
  EXPECT_NE(resumed.stdout_text.find("resumed from"), std::string::npos);
  ExpectSameFinalState(dir);
}

// PmolConfig in bf16 mixed precision.
std::string Bf16Config(const std::string& out) {
  std::string text = PmolConfig(out);
  const std::string model_end = " threads: 2 }";
  text.replace(text.find(model_end), model_end.size(), " threads: 2 dtype: \"bf16\" }");
  return text;
}

// name -> dtype, from a safetensors file's JSON header (8-byte little-endian length,
// then JSON).
std::map<std::string, std::string> SafetensorsDTypes(const std::string& path) {
  std::map<std::string, std::string> out;
  const std::string bytes = ReadFile(path);
  uint64_t n = 0;
  EXPECT_GE(bytes.size(), 8u) << path;
  if (bytes.size() < 8) return out;
  std::memcpy(&n, bytes.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n), nullptr, false);
  EXPECT_FALSE(header.is_discarded()) << path;
  if (header.is_discarded()) return out;
  for (const auto& [name, entry] : header.items())
    if (name != "__metadata__") out[name] = entry["dtype"].get<std::string>();
  return out;
}

// bf16 mixed precision: the adapter is exported in bf16, the checkpoint keeps the f32
// master copies beside the bf16 working copies, and a run stopped by SIGTERM and resumed
// ends with the bytes of an uninterrupted bf16 run (the masters, not the rounded working
// copies, carry the training across the restart).
TEST(TrainRunTest, Bf16RunStoppedAndResumedEndsBitIdentical) {
  const std::string ref = FreshDir("bf16_reference");
  CommandResult r = RunPmol({"train", "--config=" + WriteConfig(ref, Bf16Config(ref))});
  ASSERT_TRUE(ExitedWith(r, 0));
  int bf16_tensors = 0;
  for (const auto& [name, dtype] : SafetensorsDTypes(ref + "/adapter/adapter_model.safetensors")) {
    EXPECT_EQ(dtype, "BF16") << name;
    ++bf16_tensors;
  }
  EXPECT_GT(bf16_tensors, 0);
  // The optimizer shard holds flat f32 state (exp_avg, exp_avg_sq) and the f32 masters.
  const std::map<std::string, std::string> state =
      SafetensorsDTypes(ref + "/checkpoints/step-00000024/optimizer-shard-0.safetensors");
  EXPECT_EQ(state.count("master"), 1u) << "no f32 master copy of the bf16 parameters";
  for (const auto& [name, dtype] : state)
    if (name != "step") EXPECT_EQ(dtype, "F32") << name;

  const std::string dir = FreshDir("bf16_sigterm");
  const std::string config = WriteConfig(dir, Bf16Config(dir));
  RunningProgram p = StartProgram({PmolPath(), "train", "--config=" + config});
  for (int i = 0; i < 600 && ReadFile(p.stdout_path).find("step 4/24") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(p.pid, SIGTERM);
  CommandResult stopped = WaitProgram(p);
  if (stopped.exit_code == 0) GTEST_SKIP() << "the run finished before SIGTERM arrived";
  EXPECT_TRUE(ExitedWith(stopped, 1));
  CommandResult resumed = RunPmol({"train", "--config=" + config});
  ASSERT_TRUE(ExitedWith(resumed, 0));
  EXPECT_NE(resumed.stdout_text.find("resumed from"), std::string::npos);
  ExpectSameFinalState(dir, ref);
}

// bf16 full fine-tuning (every weight trained in mixed precision, DPO against a live bf16
// reference): the merged model is written in bf16, the checkpoint keeps every weight's
// f32 master, a run resumed from its step-3 checkpoint ends with the bytes of the
// uninterrupted run, and every step's loss and gradient norm follow the f32 run's within
// 2e-2 relative (the bound of the adapters' bf16 runs, tests/dist/train_ranks_test.cc;
// an update lost or applied twice moves them by more after a step).
TEST(TrainRunTest, Bf16FullFineTuningResumesBitIdenticalAndFollowsF32) {
  auto config = [](const std::string& dir, const std::string& dtype) {
    std::string text = PmolConfig(dir, 6);
    const size_t a = text.find("adapter {"), a_end = text.find("}\n", text.find("dropout", a)) + 2;
    text.replace(a, a_end - a, "adapter { kind: FULL }\n");
    const std::string model_end = " threads: 2 }";
    text.replace(text.find(model_end), model_end.size(), " threads: 2 dtype: \"" + dtype + "\" }");
    return WriteConfig(dir, text);
  };
  const std::string ref = FreshDir("full_bf16");
  ASSERT_TRUE(ExitedWith(RunPmol({"train", "--config=" + config(ref, "bf16")}), 0));
  const std::map<std::string, std::string> merged = SafetensorsDTypes(ref + "/merged/model.safetensors");
  EXPECT_GT(merged.size(), 10u);
  for (const auto& [name, dtype] : merged) EXPECT_EQ(dtype, "BF16") << name;
  const std::map<std::string, std::string> state =
      SafetensorsDTypes(ref + "/checkpoints/step-00000006/optimizer-shard-0.safetensors");
  EXPECT_EQ(state.count("master"), 1u) << "no f32 master copy of the bf16 weights";
  for (const auto& [name, dtype] : state)
    if (name != "step") EXPECT_EQ(dtype, "F32") << name;

  const std::string dir = FreshDir("full_bf16_resumed");
  const std::string resumed_config = config(dir, "bf16");
  ASSERT_TRUE(ExitedWith(RunPmol({"train", "--config=" + resumed_config}), 0));
  fs::remove_all(dir + "/checkpoints/step-00000006");
  fs::remove_all(dir + "/merged");
  const CommandResult resumed = RunPmol({"train", "--config=" + resumed_config});
  ASSERT_TRUE(ExitedWith(resumed, 0));
  EXPECT_NE(resumed.stdout_text.find("resumed from"), std::string::npos) << resumed.Describe();
  EXPECT_TRUE(Bytes(ref + "/merged/model.safetensors") == Bytes(dir + "/merged/model.safetensors"))
      << "the resumed bf16 full fine-tuning ends with other weights";

  const std::string f32 = FreshDir("full_f32");
  ASSERT_TRUE(ExitedWith(RunPmol({"train", "--config=" + config(f32, "f32")}), 0));
  for (const char* key : {"loss/total", "grad_norm"}) {
    std::map<int64_t, double> want, got;
    for (auto [path, out] : {std::pair{f32, &want}, std::pair{ref, &got}}) {
      std::ifstream in(path + "/metrics.jsonl");
      std::string line;
      while (std::getline(in, line)) {
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.value("split", "") == "train") (*out)[j["step"].get<int64_t>()] = j.at(key).get<double>();
      }
    }
    ASSERT_EQ(want.size(), 6u) << key;
    ASSERT_EQ(got.size(), want.size()) << key;
    for (const auto& [step, w] : want) EXPECT_NEAR(got[step], w, 2e-2 * std::abs(w)) << key << " step " << step;
  }
}

TEST(TrainRunTest, CorruptNewestCheckpointIsSkippedWithAWarning) {
  const std::string& ref = Reference();
  const std::string dir = FreshDir("corrupt");
  fs::copy(ref, dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  const std::string config = WriteConfig(dir, PmolConfig(dir));
  fs::remove_all(dir + "/adapter");
  // Flip one byte in the middle of the newest checkpoint's weights.
  const std::string victim = dir + "/checkpoints/step-00000024/trainable.safetensors";
  std::string bytes = ReadFile(victim);
  bytes[bytes.size() / 2] ^= 0x5A;
  WriteFile(victim, bytes);
  CommandResult r = RunPmol({"train", "--config=" + config});
  ASSERT_TRUE(ExitedWith(r, 0));
  EXPECT_NE(r.stdout_text.find("warning: skipping checkpoint"), std::string::npos) << r.Describe();
  EXPECT_NE(r.stdout_text.find("step-00000024"), std::string::npos);
  EXPECT_NE(r.stdout_text.find("resumed from " + dir + "/checkpoints/step-00000021"), std::string::npos)
      << r.Describe();
  ExpectSameFinalState(dir);
}

TEST(TrainRunTest, NonFiniteLossStopsTheRun) {
  const std::string dir = FreshDir("nonfinite");
  const std::string config = WriteConfig(dir, PmolConfig(dir));
  CommandResult r = RunPmol({"train", "--config=" + config, "--set=optimizer.lr=1e30",
                             "--set=optimizer.max_grad_norm=0", "--set=optimizer.warmup_steps=0"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"not finite", "optimizer.max_skipped_steps = 0"}));
  EXPECT_NE(r.stdout_text.find("warning: step"), std::string::npos) << r.Describe();
}

TEST(TrainRunTest, OverridesAndConfigErrors) {
  const std::string dir = FreshDir("overrides");
  const std::string config = WriteConfig(dir, PmolConfig(dir));
  CommandResult r = RunPmol({"train", "--config=" + config, "--set=optimizer.max_steps=2",
                             "--set=logging.every_steps=1"});
  ASSERT_TRUE(ExitedWith(r, 0));
  EXPECT_NE(r.stdout_text.find("step 2/2"), std::string::npos) << r.Describe();
  r = RunPmol({"train", "--config=" + config, "--set=optimizer.lrr=1"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"--set=optimizer.lrr=1", "has no field 'lrr'"}));
  r = RunPmol({"train", "--config=" + config, "--set=adapter.rank=-1"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"adapter.rank"}));
  // Resuming with another adapter is refused, and --noresume starts afresh.
  r = RunPmol({"train", "--config=" + config, "--set=adapter.rank=3", "--set=optimizer.max_steps=3"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"different training run", "rank"}));
  r = RunPmol({"train", "--config=" + config, "--set=adapter.rank=3", "--set=optimizer.max_steps=1",
               "--noresume"});
  EXPECT_TRUE(ExitedWith(r, 0));
  r = RunPmol({"train", "--config=" + config, "--set=output_dir="});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"output_dir"}));
}

TEST(TrainRunTest, BadDataAndModelsAreClearErrorsAndWriteNoCheckpoint) {
  const TrainFixture& f = Shared();
  const std::string dir = FreshDir("bad_input");
  const std::string config = WriteConfig(dir, PmolConfig(dir));
  struct Case {
    std::vector<std::string> sets;
    std::vector<std::string> mentions;
  };
  // A model whose vocabulary is smaller than the tokenizer's.
  nlohmann::json small = LlamaTiedConfig();
  small["vocab_size"] = 100;
  small["hidden_size"] = 32;
  small["intermediate_size"] = 48;
  small["num_hidden_layers"] = 2;
  InitModel(small, dir + "/small_model", 5);
  for (const Case& c : std::vector<Case>{
           {{"--set=data.tokenizer=" + dir + "/missing/tokenizer.json"}, {"missing/tokenizer.json"}},
           {{"--set=model.path=" + dir + "/small_model"},
            {"outside the model's vocabulary [0, 100)", "data.tokenizer does not belong to model.path"}},
           {{"--set=model.path=" + dir + "/nowhere"}, {"nowhere"}},
           {{"--set=data.packing=true"}, {"data.packing"}},
           {{"--set=data.on_bad_input=fail", "--set=data.max_length=8", "--set=data.max_prompt_length=4",
             "--set=data.truncate_responses=false"},
            {"eval.jsonl:1:"}}}) {
    std::vector<std::string> args = {"train", "--config=" + config};
    args.insert(args.end(), c.sets.begin(), c.sets.end());
    CommandResult r = RunPmol(args);
    EXPECT_TRUE(ExitedWith(r, 1)) << c.sets[0];
    EXPECT_TRUE(StderrMentions(r, c.mentions)) << c.sets[0];
    EXPECT_FALSE(fs::exists(dir + "/checkpoints") && !fs::is_empty(dir + "/checkpoints")) << c.sets[0];
    // Into a new output folder (two levels): the failed run leaves neither level behind.
    args.push_back("--set=output_dir=" + dir + "/new_outputs/run");
    r = RunPmol(args);
    EXPECT_TRUE(ExitedWith(r, 1)) << c.sets[0];
    EXPECT_FALSE(fs::exists(dir + "/new_outputs")) << c.sets[0] << ": empty output folders left";
  }
  // An output folder that existed (with a file in it) is left as it was.
  fs::create_directories(dir + "/kept");
  { std::ofstream(dir + "/kept/notes.txt") << "mine\n"; }
  CommandResult r = RunPmol({"train", "--config=" + config, "--set=model.path=" + dir + "/nowhere",
                             "--set=output_dir=" + dir + "/kept"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(fs::exists(dir + "/kept/notes.txt"));
  (void)f;
}

std::string Variant(const std::string& dir, const std::string& adapter, const std::string& objective) {
  std::string text = PmolConfig(dir, 2);
  const size_t a = text.find("adapter {"), a_end = text.find("}\n", text.find("dropout", a)) + 2;
  text.replace(a, a_end - a, adapter + "\n");
  const size_t o = text.find("objective {"), o_end = text.find("}\n", o) + 2;
  text.replace(o, o_end - o, objective + "\n");
  return text;
}

TEST(TrainRunTest, LoraFullSftAndRewardRunsWriteTheirOutputs) {
  const TrainFixture& f = Shared();
  struct Case {
    const char* name;
    const char* adapter;
    const char* objective;
    std::vector<const char*> files;
  };
  for (const Case& c : std::vector<Case>{
           {"lora", "adapter { kind: LORA rank: 4 alpha: 8 }", "objective { kind: DPO }",
            {"/adapter/adapter_model.safetensors", "/peft/adapter_config.json",
             "/peft/adapter_model.safetensors", "/merged/model.safetensors", "/merged/config.json"}},
           {"full", "adapter { kind: FULL }", "objective { kind: DPO precompute_reference: true }",
            {"/merged/model.safetensors", "/merged/config.json", "/eval.json"}},
           {"sft", "adapter { kind: FULL }", "objective { kind: SFT }", {"/merged/model.safetensors"}},
           {"reward", "adapter { kind: LORA rank: 2 }", "objective { kind: REWARD }",
            {"/adapter/adapter_model.safetensors", "/merged/model.safetensors"}}}) {
    const std::string dir = FreshDir(std::string("variant_") + c.name);
    CommandResult r = RunPmol({"train", "--config=" + WriteConfig(dir, Variant(dir, c.adapter, c.objective))});
    ASSERT_TRUE(ExitedWith(r, 0)) << c.name;
    for (const char* file : c.files) EXPECT_TRUE(fs::exists(dir + file)) << c.name << file;
    if (fs::exists(dir + "/merged/config.json")) {
      WriteFile(dir + "/tokens.json", "[[1, 2, 3, 4]]");
      CommandResult fwd = RunPmol({"forward", "--model=" + dir + "/merged", "--tokens=" + dir + "/tokens.json",
                                   "--out=" + dir + "/logits.safetensors"});
      EXPECT_TRUE(ExitedWith(fwd, 0)) << c.name;
    }
  }
  (void)f;
}

}  // namespace
}  // namespace pmol
