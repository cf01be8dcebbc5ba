// Multi-rank test main; see mpi_test_main.h.
#include "tests/dist/mpi_test_main.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dist/mpi_comm.h"
#include "gtest/gtest.h"

namespace pmol::dist {
namespace {
std::unique_ptr<Comm> g_world;
}  // namespace

Comm& TestWorld() { return *g_world; }

}  // namespace pmol::dist

namespace {

std::string SelfPath() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return buf;
}

int LaunchUnderMpirun(int argc, char** argv) {
  std::string ranks = "4";
  std::vector<std::string> pass;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--ranks=", 8) == 0) {
      ranks = argv[i] + 8;
    } else {
      pass.push_back(argv[i]);
    }
  }
  std::vector<std::string> args = {"mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
                                   "--mca", "btl", "self,vader,tcp", "-np", ranks, SelfPath()};
  args.insert(args.end(), pass.begin(), pass.end());
  std::string shown;
  for (const std::string& a : args) shown += a + " ";
  std::fprintf(stderr, "running: %s\n", shown.c_str());
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> cargs;
    for (std::string& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    execvp("mpirun", cargs.data());
    std::perror("mpirun");
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::fprintf(stderr, "mpirun ended by signal %d\n", WTERMSIG(status));
  return 1;
}

// After every test, the ranks agree on whether it failed anywhere; rank 0 names a test
// that failed only on other ranks (their output shows the failure itself).
class AgreeOnFailures : public testing::EmptyTestEventListener {
 public:
  void OnTestEnd(const testing::TestInfo& info) override {
    pmol::dist::Comm& world = pmol::dist::TestWorld();
    const double failed = info.result()->Failed() ? 1 : 0;
    const double anywhere = world.AllReduceMax(failed);
    if (world.rank() == 0 && anywhere > 0 && failed == 0) {
      std::fprintf(stderr, "[  FAILED  ] %s.%s failed on another rank\n", info.test_suite_name(), info.name());
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (!pmol::dist::LaunchedByMpiLauncher()) return LaunchUnderMpirun(argc, argv);
  absl::StatusOr<pmol::dist::MpiWorld> world = pmol::dist::InitMpiWorld(/*timeout_seconds=*/240);
  if (!world.ok()) {
    std::fprintf(stderr, "%s\n", world.status().ToString().c_str());
    return 1;
  }
  pmol::dist::g_world = std::move(world->world);
  const int rank = pmol::dist::g_world->rank();
  if (rank != 0) {
    unsetenv("XML_OUTPUT_FILE");
    unsetenv("GTEST_OUTPUT");
  }
  testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  testing::UnitTest::GetInstance()->listeners().Append(new AgreeOnFailures);
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  // Every rank returns the same status; a failure on another rank is reported here.
  const int any = static_cast<int>(pmol::dist::g_world->AllReduceMax(failed));
  if (any && !failed) std::fprintf(stderr, "rank %d: a test failed on another rank\n", rank);
  pmol::dist::g_world.reset();
  return any;
}
