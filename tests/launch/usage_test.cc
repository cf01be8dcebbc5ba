// The `pmol` command line itself: usage errors (no command, unknown command, unknown flag,
// stray positional argument) exit 2 with a message naming what was wrong; `--help` exits
// 0; `--device=cuda` on a build without CUDA exits 1 with a message that says so. Exit
// codes are exact and a signal is always a failure; no tolerances.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

TEST(UsageTest, NoCommandExits2WithUsage) {
  CommandResult r = RunPmol({});
  EXPECT_TRUE(ExitedWith(r, 2));
  EXPECT_TRUE(StderrMentions(r, {"usage: pmol", "init-model", "forward"}));
}

TEST(UsageTest, HelpExits0) {
  EXPECT_TRUE(ExitedWith(RunPmol({"--help"}), 0));
}

TEST(UsageTest, UnknownCommandExits2) {
  CommandResult r = RunPmol({"frobnicate", "--out=x"});
  EXPECT_TRUE(ExitedWith(r, 2));
  EXPECT_TRUE(StderrMentions(r, {"'frobnicate'"}));
}

TEST(UsageTest, UnknownFlagExits2) {
  for (const char* flag : {"--no_such_flag=1", "--no-such-flag", "-bogus"}) {
    SCOPED_TRACE(flag);
    CommandResult r = RunPmol({"forward", flag});
    EXPECT_TRUE(ExitedWith(r, 2));
    EXPECT_TRUE(StderrMentions(r, {"unknown flag"}));
  }
}

TEST(UsageTest, KnownFlagsInEverySpellingAreNotUnknown) {
  // --hf-config, --hf_config, -hf-config and "--hf-config PATH" name the same flag, and
  // --nohelp negates a bool flag; a usage error would exit 2, while these runs fail later,
  // on the missing file (exit 1).
  const std::string missing = FreshDir(CurrentTestName()) + "/absent.json";
  const std::string out = "--out=" + missing + ".d";
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"init-model", "--hf-config=" + missing, out},
           {"init-model", "--hf_config=" + missing, out},
           {"init-model", "-hf-config=" + missing, out},
           {"init-model", "--hf-config", missing, out},
           {"init-model", "--nohelp", "--hf-config=" + missing, out}}) {
    CommandResult r = RunPmol(args);
    EXPECT_TRUE(ExitedWith(r, 1));
    EXPECT_TRUE(StderrMentions(r, {missing}));
  }
}

TEST(UsageTest, StrayPositionalArgumentExits2) {
  CommandResult r = RunPmol({"forward", "--model=m", "stray"});
  EXPECT_TRUE(ExitedWith(r, 2));
  EXPECT_TRUE(StderrMentions(r, {"'stray'"}));
}

TEST(UsageTest, CudaDeviceWithoutCudaBuildExits1) {
  CommandResult r = RunPmol({"forward", "--model=m", "--tokens=t.json", "--out=o.safetensors", "--device=cuda"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"without CUDA support"}));
}

}  // namespace
}  // namespace pmol
