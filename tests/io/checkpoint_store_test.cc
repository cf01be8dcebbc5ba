// The checkpoint store (pmol/io/checkpoint_store.h): commit and read back (sizes and
// CRC-32C checked against the table-only Crc32cExtendPortable over the bytes written),
// keep_last pruning, same-step replacement, stale temporary directories, every kind of
// corruption falling back to the previous checkpoint with a warning that names the
// problem, boundary errors, and crash safety under real SIGKILLs of a committing child.
#include "pmol/io/checkpoint_store.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "pmol/io/crc32c.h"

namespace pmol {
namespace {

namespace fs = std::filesystem;

// A fresh, empty directory for this test.
std::string TestDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "_" + info->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  const fs::path dir = fs::path(::testing::TempDir()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Deterministic bytes: a splitmix64 stream seeded by (step, tag).
std::string Bytes(int64_t step, int tag, size_t size) {
  uint64_t x = static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(tag);
  std::string out(size, '\0');
  for (size_t i = 0; i < size; i += 8) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    for (size_t j = 0; j < 8 && i + j < size; ++j) out[i + j] = static_cast<char>(z >> (8 * j));
  }
  return out;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

uint32_t OracleCrc(const std::string& bytes) {
  return Crc32cExtendPortable(0, bytes.data(), bytes.size());
}

// Begins `step`, writes `files` into it and commits.
absl::StatusOr<CheckpointInfo> CommitFiles(
    CheckpointStore& store, int64_t step, const std::map<std::string, std::string>& files,
    const std::map<std::string, std::string>& metadata = {}) {
  absl::StatusOr<PendingCheckpoint> pending = store.Begin(step);
  if (!pending.ok()) return pending.status();
  for (const auto& [name, bytes] : files) {
    std::ofstream out(pending->dir() + "/" + name, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out.good()) return absl::InternalError("test could not write " + name);
  }
  return store.Commit(*std::move(pending), metadata);
}

std::map<std::string, std::string> SmallFiles(int64_t step) {
  return {{"a.bin", Bytes(step, 1, 100000)}, {"b.bin", Bytes(step, 2, 3000)}};
}

// The files of `info` as listed by its manifest, checked against `expected` (name ->
// bytes): names, sizes, CRCs (oracle) and the bytes on disk.
void ExpectFiles(const CheckpointInfo& info, const std::map<std::string, std::string>& expected) {
  ASSERT_EQ(info.manifest.files_size(), static_cast<int>(expected.size()));
  int i = 0;
  for (const auto& [name, bytes] : expected) {
    const config::CheckpointFile& f = info.manifest.files(i++);
    EXPECT_EQ(f.name(), name);
    EXPECT_EQ(f.size(), bytes.size()) << name;
    EXPECT_EQ(f.crc32c(), OracleCrc(bytes)) << name;
    EXPECT_TRUE(ReadFile(info.FilePath(name)) == bytes) << name;
  }
}

TEST(CheckpointStoreTest, CommitThenLatestValidReadsItBack) {
  const std::string root = TestDir() + "/ckpts";  // created by Begin
  CheckpointStore store(root, 3);
  // 5 MiB + 123 bytes crosses the 4 MiB read chunk; an empty file is a valid file.
  const std::map<std::string, std::string> files = {
      {"model.safetensors", Bytes(7, 1, (size_t{5} << 20) + 123)},
      {"optimizer.bin", Bytes(7, 2, 1000)},
      {"empty", ""}};
  const std::map<std::string, std::string> metadata = {{"loss", "0.25"}, {"note", "a b\n\"c\""}};
  absl::StatusOr<CheckpointInfo> committed = CommitFiles(store, 7, files, metadata);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->step, 7);
  EXPECT_EQ(committed->dir, root + "/step-00000007");
  ExpectFiles(*committed, files);
  EXPECT_EQ(Entries(root), std::vector<std::string>{"step-00000007"});
  EXPECT_EQ(Entries(committed->dir),
            (std::vector<std::string>{"empty", "manifest.textproto", "model.safetensors",
                                      "optimizer.bin"}));

  CheckpointStore fresh(root, 3);
  std::vector<std::string> warnings;
  absl::StatusOr<std::optional<CheckpointInfo>> latest = fresh.LatestValid(&warnings);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_TRUE(warnings.empty());
  ASSERT_TRUE(latest->has_value());
  const CheckpointInfo& info = **latest;
  EXPECT_EQ(info.step, 7);
  EXPECT_EQ(info.dir, root + "/step-00000007");
  EXPECT_EQ(info.manifest.step(), 7);
  EXPECT_EQ(info.manifest.format_version(), 1);
  EXPECT_GT(info.manifest.wall_time(), 1.6e9);
  ExpectFiles(info, files);
  const std::map<std::string, std::string> read_metadata(info.manifest.metadata().begin(),
                                                         info.manifest.metadata().end());
  EXPECT_EQ(read_metadata, metadata);
  EXPECT_EQ(fresh.List(), (std::vector<std::pair<int64_t, std::string>>{{7, info.dir}}));
}

TEST(CheckpointStoreTest, KeepLastPrunesOldest) {
  const std::string root = TestDir();
  CheckpointStore store(root, 2);
  for (int64_t step = 1; step <= 5; ++step) {
    ASSERT_TRUE(CommitFiles(store, step, SmallFiles(step)).ok());
    EXPECT_EQ(store.List().size(), static_cast<size_t>(std::min<int64_t>(step, 2)));
  }
  EXPECT_EQ(store.List(), (std::vector<std::pair<int64_t, std::string>>{
                              {5, root + "/step-00000005"}, {4, root + "/step-00000004"}}));
  EXPECT_EQ(Entries(root), (std::vector<std::string>{"step-00000004", "step-00000005"}));
  // A commit older than the newest keeps its place: {5, 3}, not {5, 4}.
  ASSERT_TRUE(CommitFiles(store, 3, SmallFiles(3)).ok());
  EXPECT_EQ(Entries(root), (std::vector<std::string>{"step-00000003", "step-00000005"}));
  // keep_last 1.
  CheckpointStore one(root, 1);
  ASSERT_TRUE(CommitFiles(one, 6, SmallFiles(6)).ok());
  EXPECT_EQ(Entries(root), std::vector<std::string>{"step-00000006"});
}

void CheckSameStepReplacement(bool disable_exchange) {
  const std::string root = TestDir();
  CheckpointStore store(root, 3);
  store.set_disable_rename_exchange_for_testing(disable_exchange);
  ASSERT_TRUE(CommitFiles(store, 1, SmallFiles(1)).ok());
  ASSERT_TRUE(CommitFiles(store, 2, SmallFiles(2), {{"run", "old"}}).ok());
  const std::map<std::string, std::string> replacement = {{"c.bin", Bytes(99, 3, 5000)}};
  absl::StatusOr<CheckpointInfo> replaced = CommitFiles(store, 2, replacement, {{"run", "new"}});
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(Entries(root), (std::vector<std::string>{"step-00000001", "step-00000002"}));
  std::vector<std::string> warnings;
  auto latest = CheckpointStore(root, 3).LatestValid(&warnings);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ((*latest)->step, 2);
  ExpectFiles(**latest, replacement);
  EXPECT_EQ((*latest)->manifest.metadata().at("run"), "new");
  EXPECT_EQ(Entries((*latest)->dir), (std::vector<std::string>{"c.bin", "manifest.textproto"}));
}

TEST(CheckpointStoreTest, SameStepReplacementWithRenameExchange) {
  CheckSameStepReplacement(false);
}

TEST(CheckpointStoreTest, SameStepReplacementWithTwoRenames) { CheckSameStepReplacement(true); }

TEST(CheckpointStoreTest, StaleTempDirsArePrunedOpenPendingOnesKept) {
  const std::string root = TestDir();
  CheckpointStore store(root, 2);
  // Left by a killed run: a half-written checkpoint and a half-deleted one.
  fs::create_directories(root + "/.tmp-step-3-99999-0");
  WriteFile(root + "/.tmp-step-3-99999-0/model.bin", "partial");
  fs::create_directories(root + "/.tmp-prune-1-99999-4/x");
  WriteFile(root + "/.tmp-junk", "junk");
  // Not checkpoints, and not temporary: List ignores them, Commit leaves them alone.
  fs::create_directories(root + "/step-abc");
  fs::create_directories(root + "/step-12x");
  fs::create_directories(root + "/notes");
  WriteFile(root + "/step-00000099", "a file, not a directory");
  EXPECT_TRUE(store.List().empty());

  absl::StatusOr<PendingCheckpoint> open = store.Begin(10);
  ASSERT_TRUE(open.ok()) << open.status();
  EXPECT_EQ(fs::path(open->dir()).parent_path().string(), root);
  EXPECT_EQ(fs::path(open->dir()).filename().string().rfind(".tmp-step-10-", 0), 0u) << open->dir();
  WriteFile(open->dir() + "/w.bin", "open");

  ASSERT_TRUE(CommitFiles(store, 1, SmallFiles(1)).ok());
  EXPECT_EQ(Entries(root),
            (std::vector<std::string>{fs::path(open->dir()).filename().string(), "notes",
                                      "step-00000001", "step-00000099", "step-12x", "step-abc"}));
  const std::string open_dir = open->dir();
  absl::StatusOr<CheckpointInfo> ten = store.Commit(*std::move(open), {});
  ASSERT_TRUE(ten.ok()) << ten.status();
  EXPECT_FALSE(fs::exists(open_dir));
  EXPECT_EQ(store.List(), (std::vector<std::pair<int64_t, std::string>>{
                              {10, root + "/step-00000010"}, {1, root + "/step-00000001"}}));

  // A pending checkpoint dropped without Commit deletes its directory.
  std::string dropped;
  {
    absl::StatusOr<PendingCheckpoint> p = store.Begin(11);
    ASSERT_TRUE(p.ok());
    dropped = p->dir();
    WriteFile(dropped + "/x", "x");
    EXPECT_TRUE(fs::exists(dropped));
  }
  EXPECT_FALSE(fs::exists(dropped));
}

TEST(CheckpointStoreTest, MissingOrEmptyRootHasNoCheckpointAndNoError) {
  const std::string dir = TestDir();
  for (const std::string& root : {dir + "/missing", dir}) {
    CheckpointStore store(root, 2);
    std::vector<std::string> warnings;
    auto latest = store.LatestValid(&warnings);
    ASSERT_TRUE(latest.ok()) << latest.status();
    EXPECT_FALSE(latest->has_value());
    EXPECT_TRUE(warnings.empty());
    EXPECT_TRUE(store.List().empty());
  }
  EXPECT_FALSE(fs::exists(dir + "/missing"));
}

struct Corruption {
  std::string what;
  std::function<void(const std::string& dir)> apply;
  std::string expected;  // a substring of the warning after "skipping checkpoint DIR: "
};

void RewriteManifest(const std::string& dir,
                     const std::function<void(config::CheckpointManifest*)>& edit) {
  config::CheckpointManifest m;
  ASSERT_TRUE(
      google::protobuf::TextFormat::ParseFromString(ReadFile(dir + "/manifest.textproto"), &m));
  edit(&m);
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(m, &text));
  WriteFile(dir + "/manifest.textproto", text);
}

std::vector<Corruption> Corruptions() {
  return {
      {"flipped byte",
       [](const std::string& d) {
         std::string bytes = ReadFile(d + "/a.bin");
         bytes[5000] ^= 0x10;
         WriteFile(d + "/a.bin", bytes);
       },
       "file a.bin: crc32c 0x"},
      {"truncated file", [](const std::string& d) { fs::resize_file(d + "/b.bin", 2999); },
       "file b.bin: size 2999 bytes, manifest says 3000"},
      {"deleted file", [](const std::string& d) { fs::remove(d + "/a.bin"); },
       "file a.bin is missing"},
      // Decision: a file the manifest does not list makes the checkpoint corrupt (only
      // Commit writes into a published directory).
      {"extra unlisted file", [](const std::string& d) { WriteFile(d + "/c.bin", "extra"); },
       "unlisted file c.bin"},
      {"extra subdirectory", [](const std::string& d) { fs::create_directories(d + "/sub"); },
       "unlisted file sub"},
      {"missing manifest", [](const std::string& d) { fs::remove(d + "/manifest.textproto"); },
       "manifest.textproto is missing"},
      {"garbage manifest",
       [](const std::string& d) {
         WriteFile(d + "/manifest.textproto", "step: 2\nthis is { garbage");
       },
       "manifest.textproto:2:"},
      {"binary manifest",
       [](const std::string& d) { WriteFile(d + "/manifest.textproto", Bytes(5, 5, 4096)); },
       "manifest.textproto:"},
      {"empty manifest", [](const std::string& d) { WriteFile(d + "/manifest.textproto", ""); },
       "manifest.textproto: step is missing"},
      {"step disagrees with the directory",
       [](const std::string& d) {
         RewriteManifest(d, [](config::CheckpointManifest* m) { m->set_step(3); });
       },
       "manifest.textproto: step 3 differs from the directory's step 2"},
      {"unknown format_version",
       [](const std::string& d) {
         RewriteManifest(d, [](config::CheckpointManifest* m) { m->set_format_version(2); });
       },
       "manifest.textproto: format_version 2 is not 1"},
      {"manifest size disagrees",
       [](const std::string& d) {
         RewriteManifest(
             d, [](config::CheckpointManifest* m) { m->mutable_files(1)->set_size(3001); });
       },
       "file b.bin: size 3000 bytes, manifest says 3001"},
      {"file name escapes the directory",
       [](const std::string& d) {
         RewriteManifest(d, [](config::CheckpointManifest* m) {
           m->mutable_files(0)->set_name("../step-00000001/a.bin");
         });
       },
       "files[0].name \"../step-00000001/a.bin\" is not a file name"},
      {"file listed without crc",
       [](const std::string& d) {
         RewriteManifest(
             d, [](config::CheckpointManifest* m) { m->mutable_files(1)->clear_crc32c(); });
       },
       "files[1].crc32c is missing (b.bin)"},
  };
}

TEST(CheckpointStoreTest, EachCorruptionFallsBackToThePreviousCheckpointWithAWarning) {
  const std::string dir = TestDir();
  const std::vector<Corruption> corruptions = Corruptions();
  for (size_t i = 0; i < corruptions.size(); ++i) {
    const Corruption& c = corruptions[i];
    SCOPED_TRACE(c.what);
    const std::string root = dir + "/" + std::to_string(i);
    CheckpointStore store(root, 5);
    ASSERT_TRUE(CommitFiles(store, 1, SmallFiles(1)).ok());
    absl::StatusOr<CheckpointInfo> two = CommitFiles(store, 2, SmallFiles(2));
    ASSERT_TRUE(two.ok()) << two.status();
    ASSERT_TRUE(store.Verify(two->dir).ok());
    c.apply(two->dir);

    absl::Status verified = store.Verify(two->dir).status();
    EXPECT_FALSE(verified.ok());
    EXPECT_NE(verified.message().find("checkpoint " + two->dir + ": "), std::string::npos)
        << verified;
    EXPECT_NE(verified.message().find(c.expected), std::string::npos) << verified;

    std::vector<std::string> warnings;
    auto latest = CheckpointStore(root, 5).LatestValid(&warnings);
    ASSERT_TRUE(latest.ok()) << latest.status();
    ASSERT_TRUE(latest->has_value());
    EXPECT_EQ((*latest)->step, 1);
    ExpectFiles(**latest, SmallFiles(1));
    ASSERT_EQ(warnings.size(), 1u);
    const std::string prefix = "skipping checkpoint " + two->dir + ": ";
    EXPECT_EQ(warnings[0].rfind(prefix, 0), 0u) << warnings[0];
    EXPECT_NE(warnings[0].find(c.expected, prefix.size()), std::string::npos) << warnings[0];
  }
}

TEST(CheckpointStoreTest, AllCorruptMeansNoneWithOneWarningEach) {
  const std::string root = TestDir();
  CheckpointStore store(root, 5);
  ASSERT_TRUE(CommitFiles(store, 1, SmallFiles(1)).ok());
  ASSERT_TRUE(CommitFiles(store, 2, SmallFiles(2)).ok());
  fs::remove(root + "/step-00000001/b.bin");
  WriteFile(root + "/step-00000002/manifest.textproto", "}");
  std::vector<std::string> warnings;
  auto latest = store.LatestValid(&warnings);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_FALSE(latest->has_value());
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0].rfind(
                "skipping checkpoint " + root + "/step-00000002: manifest.textproto:1:1: ", 0),
            0u)
      << warnings[0];
  EXPECT_EQ(warnings[1], "skipping checkpoint " + root + "/step-00000001: file b.bin is missing");
  // A later commit is unaffected by the corrupt ones (and, keeping 5, keeps them).
  ASSERT_TRUE(CommitFiles(store, 3, SmallFiles(3)).ok());
  warnings.clear();
  latest = store.LatestValid(&warnings);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 3);
  EXPECT_TRUE(warnings.empty());
}

TEST(CheckpointStoreTest, BoundaryErrorsNameThePath) {
  const std::string dir = TestDir();
  // A root that is a regular file.
  const std::string file_root = dir + "/not_a_dir";
  WriteFile(file_root, "x");
  CheckpointStore bad(file_root, 2);
  absl::StatusOr<PendingCheckpoint> begun = bad.Begin(1);
  ASSERT_FALSE(begun.ok());
  EXPECT_NE(begun.status().message().find(file_root), std::string::npos) << begun.status();
  EXPECT_NE(begun.status().message().find("not a directory"), std::string::npos) << begun.status();
  auto latest = bad.LatestValid(nullptr);
  ASSERT_FALSE(latest.ok());
  EXPECT_NE(latest.status().message().find(file_root), std::string::npos) << latest.status();
  // A root under a regular file cannot be created.
  CheckpointStore under(file_root + "/ckpt", 2);
  begun = under.Begin(1);
  ASSERT_FALSE(begun.ok());
  EXPECT_NE(begun.status().message().find(file_root + "/ckpt"), std::string::npos)
      << begun.status();

  const std::string root = dir + "/ckpt";
  CheckpointStore store(root, 2);
  EXPECT_FALSE(store.Begin(-1).ok());

  // A subdirectory in the pending checkpoint: an error naming it, nothing published,
  // the temporary directory gone.
  begun = store.Begin(4);
  ASSERT_TRUE(begun.ok()) << begun.status();
  const std::string tmp = begun->dir();
  WriteFile(tmp + "/ok.bin", "ok");
  fs::create_directories(tmp + "/sub");
  absl::StatusOr<CheckpointInfo> committed = store.Commit(*std::move(begun), {});
  ASSERT_FALSE(committed.ok());
  EXPECT_NE(committed.status().message().find(tmp + "/sub"), std::string::npos)
      << committed.status();
  EXPECT_NE(committed.status().message().find("is a directory"), std::string::npos)
      << committed.status();
  EXPECT_TRUE(store.List().empty());
  EXPECT_FALSE(fs::exists(tmp));

  // The manifest's name is reserved; a symlink is not a plain file.
  begun = store.Begin(5);
  ASSERT_TRUE(begun.ok());
  WriteFile(begun->dir() + "/manifest.textproto", "step: 5");
  committed = store.Commit(*std::move(begun), {});
  ASSERT_FALSE(committed.ok());
  EXPECT_NE(committed.status().message().find("manifest.textproto is reserved"), std::string::npos)
      << committed.status();
  begun = store.Begin(6);
  ASSERT_TRUE(begun.ok());
  fs::create_symlink("/etc/hostname", begun->dir() + "/link");
  committed = store.Commit(*std::move(begun), {});
  ASSERT_FALSE(committed.ok());
  EXPECT_NE(committed.status().message().find("/link is not a regular file"), std::string::npos)
      << committed.status();
  EXPECT_TRUE(store.List().empty());
  EXPECT_TRUE(Entries(root).empty());

  // A pending checkpoint of another store.
  CheckpointStore other(dir + "/other", 2);
  begun = other.Begin(1);
  ASSERT_TRUE(begun.ok());
  committed = store.Commit(*std::move(begun), {});
  ASSERT_FALSE(committed.ok());
  EXPECT_NE(committed.status().message().find("another store"), std::string::npos)
      << committed.status();
}

// --- Crash safety -----------------------------------------------------------------------

// What the child commits at `step`: three files, several MB, a deterministic function of
// the step (sizes included).
std::map<std::string, std::string> CrashFiles(int64_t step) {
  return {{"model.bin", Bytes(step, 1, (size_t{2} << 20) + 4096 * (step % 7))},
          {"optimizer.bin", Bytes(step, 2, (size_t{3} << 20) + 17 * step)},
          {"state.json", "{\"step\": " + std::to_string(step) + "}"}};
}

// The child: commits steps start, start+1, ... forever, reporting each committed step
// on `report_fd`. Only _exit: no gtest, no atexit handlers.
[[noreturn]] void CommitForever(const std::string& root, int64_t start, int report_fd) {
  CheckpointStore store(root, 2);
  for (int64_t step = start;; ++step) {
    absl::StatusOr<PendingCheckpoint> pending = store.Begin(step);
    if (!pending.ok()) _exit(3);
    for (const auto& [name, bytes] : CrashFiles(step)) {
      const std::string path = pending->dir() + "/" + name;
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) _exit(4);
      // Several writes per file, so that kills land between them.
      for (size_t at = 0; at < bytes.size();) {
        const size_t n = std::min<size_t>(bytes.size() - at, 512 * 1024);
        const ssize_t w = ::write(fd, bytes.data() + at, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(5);
        at += static_cast<size_t>(w);
      }
      ::close(fd);
    }
    absl::StatusOr<CheckpointInfo> info =
        store.Commit(*std::move(pending), {{"step", std::to_string(step)}});
    if (!info.ok()) _exit(6);
    if (::write(report_fd, &step, sizeof(step)) != sizeof(step)) _exit(7);
  }
}

TEST(CheckpointStoreTest, SurvivesSigkillAtRandomMoments) {
  const std::string root = TestDir() + "/ckpts";
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> delay_us(0, 50000);
  int64_t total_commits = 0;
  int trials_with_checkpoint = 0;
  for (int trial = 0; trial < 20; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    // Resume like a training run: after the newest valid checkpoint, or (every fourth
    // trial, killed anywhere) at it, so that the first commit replaces a published step.
    std::vector<std::string> warnings;
    auto before = CheckpointStore(root, 2).LatestValid(&warnings);
    ASSERT_TRUE(before.ok()) << before.status();
    const int64_t previous = before->has_value() ? (*before)->step : 0;
    const int64_t start = (trial % 4 == 2 && before->has_value()) ? previous : previous + 1;

    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      CommitForever(root, start, fds[1]);
    }
    ::close(fds[1]);
    // Odd trials kill in the steady state (after a first commit), even ones anywhere
    // from the start (possibly before any commit).
    if (trial % 2 == 1) {
      pollfd p = {fds[0], POLLIN, 0};
      ASSERT_EQ(::poll(&p, 1, 60000), 1) << "the child committed nothing in 60 s";
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "the child ended by itself: status " << wstatus;
    int64_t last_reported = -1;
    int64_t reported_step = 0;
    while (::read(fds[0], &reported_step, sizeof(reported_step)) == sizeof(reported_step)) {
      last_reported = reported_step;
      ++total_commits;
    }
    ::close(fds[0]);

    warnings.clear();
    auto after = CheckpointStore(root, 2).LatestValid(&warnings);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_TRUE(warnings.empty()) << warnings[0];
    // Neither a reported commit nor an earlier valid checkpoint is ever lost.
    if (last_reported >= 0 || before->has_value()) {
      ASSERT_TRUE(after->has_value());
    }
    if (!after->has_value()) continue;
    ++trials_with_checkpoint;
    const CheckpointInfo& info = **after;
    // At most one step past the last report (published, killed before reporting).
    const int64_t floor = std::max<int64_t>(last_reported, previous);
    EXPECT_GE(info.step, floor);
    EXPECT_LE(info.step, floor + 1);
    ExpectFiles(info, CrashFiles(info.step));
    EXPECT_EQ(info.manifest.metadata().at("step"), std::to_string(info.step));
  }
  EXPECT_GT(total_commits, 0);
  EXPECT_GT(trials_with_checkpoint, 0);
  std::printf("%lld commits reported over 20 kills; %d kills left a checkpoint\n",
              static_cast<long long>(total_commits), trials_with_checkpoint);

  // A new writer commits and clears whatever the kills left behind.
  CheckpointStore store(root, 2);
  std::vector<std::string> warnings;
  auto latest = store.LatestValid(&warnings);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  const int64_t next = (*latest)->step + 1;
  absl::StatusOr<CheckpointInfo> committed = CommitFiles(store, next, CrashFiles(next));
  ASSERT_TRUE(committed.ok()) << committed.status();
  for (const std::string& name : Entries(root)) {
    EXPECT_NE(name.rfind(".tmp-", 0), 0u) << "stale " << name;
  }
  EXPECT_EQ(store.List().size(), 2u);
  latest = store.LatestValid(&warnings);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, next);
  EXPECT_TRUE(warnings.empty());
}

}  // namespace
}  // namespace pmol
