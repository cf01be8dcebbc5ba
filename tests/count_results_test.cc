// tests/count_results.py (the README test command's tally) on a synthetic `bazel test`
// summary and bazel-testlogs tree: plain and "(cached)" targets, a sharded target reported
// "(3/4 cached)" (its XML per shard), a failing sharded one reported "(1/2 cached)", a
// target without XML, and one that did not run. Every case must be counted: a summary line
// the tally cannot read would hide its test, passed or failed.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace {

namespace fs = std::filesystem;

void WriteXml(const fs::path& path, const std::string& cases) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << "<?xml version=\"1.0\"?>\n<testsuites><testsuite name=\"s\">" << cases
                      << "</testsuite></testsuites>\n";
}

TEST(CountResults, CountsEveryCaseOfEverySummaryLine) {
  const fs::path script = fs::absolute("tests/count_results.py");
  ASSERT_TRUE(fs::exists(script)) << script;
  const fs::path dir = fs::path(std::getenv("TEST_TMPDIR")) / "count_results";
  fs::remove_all(dir);
  const fs::path logs = dir / "bazel-testlogs";
  const std::string ok = "<testcase name=\"a\" status=\"run\"/>";
  const std::string skip = "<testcase name=\"s\" status=\"run\" result=\"skipped\"><skipped/></testcase>";
  const std::string bad = "<testcase name=\"f\" status=\"run\"><failure message=\"x\"/></testcase>";
  WriteXml(logs / "p/plain/test.xml", ok + ok);                  // 2 passed
  WriteXml(logs / "p/cached/test.xml", ok + skip);               // 1 passed, 1 skipped
  WriteXml(logs / "p/sharded/shard_1_of_2/test.xml", ok + ok);   // 2 passed
  WriteXml(logs / "p/sharded/shard_2_of_2/test.xml", ok);        // 1 passed
  WriteXml(logs / "p/broken/shard_1_of_2/test.xml", ok);         // 1 passed
  WriteXml(logs / "p/broken/shard_2_of_2/test.xml", bad);        // 1 failed
  std::ofstream(dir / "summary.txt")
      << "INFO: Build completed\n"
      << "//p:plain                                   PASSED in 0.1s\n"
      << "//p:cached                         (cached) PASSED in 0.0s\n"
      << "//p:sharded                    (3/4 cached) PASSED in 61.6s\n"
      << "//p:broken                     (1/2 cached) FAILED in 1 out of 2 in 2.0s\n"
      << "//p:no_xml                                  PASSED in 0.1s\n"      // 1 passed
      << "//p:never_built                    FAILED TO BUILD\n"              // 1 failed
      << "Executed 5 out of 6 tests: 4 tests pass and 2 fail locally.\n";
  const std::string cmd = "cd '" + dir.string() + "' && /usr/bin/python3 '" + script.string() +
                          "' < summary.txt 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char buf[256] = {};
  const bool read = std::fgets(buf, sizeof(buf), pipe) != nullptr;
  const int status = pclose(pipe);
  ASSERT_TRUE(read);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(std::string(buf), "8 2 1\n");  // passed 2+1+3+1+1, failed 1+1, skipped 1
}

}  // namespace
