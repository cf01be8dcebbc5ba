// See grads_test_util.h.
#include "tests/grads/grads_test_util.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "pmol/core/rng.h"
#include "pmol/core/tensor.h"
#include "pmol/io/safetensors.h"

extern char** environ;

namespace pmol::grads_test {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

std::string TmpRoot() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

std::string ProcessResult::Describe() const {
  std::ostringstream s;
  s << "$ " << command << "\n";
  if (term_signal != 0) {
    s << "killed by signal " << term_signal << " (" << strsignal(term_signal) << ")\n";
  } else {
    s << "exit code " << exit_code << "\n";
  }
  s << "--- stdout ---\n" << out << "--- stderr ---\n" << err;
  return s.str();
}

ProcessResult RunProcess(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string base = TmpRoot() + "/grads_run_" + std::to_string(++counter);
  const std::string out_path = base + ".stdout", err_path = base + ".stderr";
  std::vector<std::string> strings = args;
  std::vector<char*> argv;
  ProcessResult r;
  for (std::string& a : strings) {
    argv.push_back(a.data());
    r.command += (r.command.empty() ? "" : " ") + a;
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int error = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    r.err = std::string("cannot start: ") + std::strerror(error);
    return r;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.term_signal = WTERMSIG(status);
  r.out = Slurp(out_path);
  r.err = Slurp(err_path);
  return r;
}

Json BatchJson(const std::vector<Pair>& pairs) {
  Json list = Json::array();
  for (const Pair& p : pairs) {
    list.push_back({{"prompt", p.prompt},
                    {"chosen", p.chosen},
                    {"rejected", p.rejected},
                    {"preference", p.preference}});
  }
  return {{"pairs", list}};
}

std::vector<Pair> RandomPairs(int n, int vocab, int num_preferences, uint64_t seed) {
  Rng rng(seed);
  auto ids = [&](int len) {
    std::vector<int32_t> v;
    for (int i = 0; i < len; ++i) v.push_back(static_cast<int32_t>(rng.NextU64() % vocab));
    return v;
  };
  std::vector<Pair> pairs;
  for (int i = 0; i < n; ++i) {
    Pair p;
    p.prompt = ids(1 + (i * 3 + 1) % 5);
    p.chosen = ids(1 + (i * 2 + 3) % 6);
    p.rejected = ids(1 + (i * 5 + 1) % 6);
    if (p.rejected.size() == p.chosen.size()) p.rejected.push_back(3);
    p.preference = i % num_preferences;
    pairs.push_back(std::move(p));
  }
  return pairs;
}

std::map<std::string, Stored> ReadAll(const std::string& path) {
  std::map<std::string, Stored> out;
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  Backend* cpu = GetBackend(DeviceType::kCpu, 1).value();
  for (const SafetensorsEntry& e : (*file)->entries()) {
    Stored s;
    s.dtype = DTypeName(e.dtype);
    s.shape = e.shape;
    auto t = (*file)->Load(e.name, cpu, DType::kF64);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) s.values = t->ToDoubles();
    out[e.name] = std::move(s);
  }
  return out;
}

void WriteTensors(const std::string& path, const std::vector<Named>& tensors, bool f32) {
  Backend* cpu = GetBackend(DeviceType::kCpu, 1).value();
  std::vector<std::pair<std::string, Tensor>> list;
  for (const Named& n : tensors) {
    Tensor t = Tensor::FromHost(n.values.data(), n.shape, DType::kF64, cpu);
    list.emplace_back(n.name, f32 ? t.ConvertTo(DType::kF32) : t);
  }
  const absl::Status s = WriteSafetensors(path, list);
  ASSERT_TRUE(s.ok()) << s;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

}  // namespace pmol::grads_test
