// Helpers for end-to-end tests of the `pmol` command; see pmol_command.h.
#include "tests/launch/pmol_command.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace pmol {
namespace {

std::string TmpRoot() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

}  // namespace

std::string CommandResult::Describe() const {
  std::ostringstream s;
  s << "$ " << command << "\n";
  if (term_signal != 0) {
    s << "killed by signal " << term_signal << " (" << strsignal(term_signal) << ")\n";
  } else {
    s << "exit code " << exit_code << "\n";
  }
  s << "--- stdout ---\n" << stdout_text << "--- stderr ---\n" << stderr_text;
  return s.str();
}

std::string PmolPath() { return "launch/pmol"; }

CommandResult RunPmol(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {PmolPath()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv);
}

RunningProgram StartProgram(const std::vector<std::string>& args) {
  static int counter = 0;
  RunningProgram p;
  const std::string base = TmpRoot() + "/run_" + std::to_string(++counter);
  p.stdout_path = base + ".stdout";
  p.stderr_path = base + ".stderr";

  std::vector<std::string> argv_strings = args;
  std::vector<char*> argv;
  for (std::string& a : argv_strings) {
    argv.push_back(a.data());
    p.command += (p.command.empty() ? "" : " ") + a;
  }
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, p.stdout_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, p.stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  const int spawn_error = posix_spawn(&p.pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    ADD_FAILURE() << "cannot start " << argv[0] << " from " << std::filesystem::current_path()
                  << ": " << std::strerror(spawn_error);
    p.pid = -1;
  }
  return p;
}

CommandResult WaitProgram(const RunningProgram& p) {
  CommandResult r;
  r.command = p.command;
  if (p.pid <= 0) return r;
  int status = 0;
  while (waitpid(p.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  r.stdout_text = ReadFile(p.stdout_path);
  r.stderr_text = ReadFile(p.stderr_path);
  return r;
}

CommandResult RunProgram(const std::vector<std::string>& args) {
  return WaitProgram(StartProgram(args));
}

::testing::AssertionResult ExitedWith(const CommandResult& r, int code) {
  if (r.term_signal == 0 && r.exit_code == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected exit code " << code << "\n" << r.Describe();
}

::testing::AssertionResult StderrMentions(const CommandResult& r,
                                          const std::vector<std::string>& needles) {
  for (const std::string& n : needles) {
    if (r.stderr_text.find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "stderr does not mention '" << n << "'\n"
                                           << r.Describe();
  }
  return ::testing::AssertionSuccess();
}

std::string FreshDir(const std::string& name) {
  const std::string dir = TmpRoot() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) ADD_FAILURE() << "cannot write " << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

nlohmann::json LlamaConfig() {
  return {{"model_type", "llama"},       {"vocab_size", 211},      {"hidden_size", 48},
          {"intermediate_size", 96},     {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2},    {"head_dim", 16},         {"attention_bias", true},
          {"tie_word_embeddings", false}, {"rms_norm_eps", 1e-5},  {"rope_theta", 10000.0}};
}

nlohmann::json LlamaTiedConfig() {
  return {{"model_type", "llama"},      {"vocab_size", 128},      {"hidden_size", 32},
          {"intermediate_size", 64},    {"num_hidden_layers", 1}, {"num_attention_heads", 4},
          {"num_key_value_heads", 4},   {"tie_word_embeddings", true}, {"rms_norm_eps", 1e-6}};
}

nlohmann::json Qwen2Config() {
  return {{"model_type", "qwen2"},     {"vocab_size", 151},      {"hidden_size", 40},
          {"intermediate_size", 72},   {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2},  {"tie_word_embeddings", true}, {"rms_norm_eps", 1e-6},
          {"rope_theta", 1000000.0}};
}

nlohmann::json TinyTrainLlamaConfig() {
  nlohmann::json config = LlamaTiedConfig();
  config["vocab_size"] = 1024;
  config["hidden_size"] = 32;
  config["intermediate_size"] = 48;
  config["num_hidden_layers"] = 2;
  return config;
}

void InitModel(const nlohmann::json& config, const std::string& dir, int seed,
               const std::string& dtype) {
  const std::string config_path = dir + ".config.json";
  WriteFile(config_path, config.dump(2));
  CommandResult r = RunPmol({"init-model", "--hf-config=" + config_path, "--out=" + dir,
                             "--seed=" + std::to_string(seed), "--dtype=" + dtype});
  ASSERT_TRUE(ExitedWith(r, 0));
}

const TrainFixture& SharedTrainFixture(const std::string& name) {
  static const TrainFixture* fixture = [&name] {
    auto* f = new TrainFixture;
    f->root = FreshDir(name);
    f->data = f->root + "/data";
    f->model = f->root + "/model";
    EXPECT_TRUE(ExitedWith(RunPmol({"make-demo-data", "--out=" + f->data, "--seed=2"}), 0));
    InitModel(TinyTrainLlamaConfig(), f->model, 5);
    return f;
  }();
  return *fixture;
}

const char kTinyPmolAdapter[] = R"(adapter {
  kind: PMOL
  groups { name: "helpfulness" experts: 1 }
  groups { name: "harmlessness" experts: 2 }
  empty_experts: 1
  rank: 2
  alpha: 4
  dropout: 0.1
})";

std::string RawSafetensors(const nlohmann::json& header, const std::string& data) {
  const std::string text = header.dump();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return bytes + text + data;
}

std::string CurrentTestName() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

}  // namespace pmol
