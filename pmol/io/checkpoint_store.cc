// The atomic, checksummed checkpoint store; layout and commit protocol in
// checkpoint_store.h.
#include "pmol/io/checkpoint_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "kernels/check.h"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/crc32c.h"

namespace pmol {
namespace {

namespace pb = google::protobuf;

constexpr size_t kChunkBytes = size_t{4} << 20;
// A manifest lists a handful of files; anything this large is not one.
constexpr off_t kMaxManifestBytes = off_t{64} << 20;
constexpr char kTempPrefix[] = ".tmp-";

// Distinguishes the temporary directories of one process (several stores included).
std::atomic<uint64_t> temp_counter{0};

absl::Status ErrnoError(const std::string& what, const std::string& path, int err) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(err)));
}

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (!dir.empty() && dir.back() == '/') return dir + name;
  return absl::StrCat(dir, "/", name);
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string ParentDir(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool StartsWith(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

// "step-<1 to 18 digits>" -> the step; anything else -> nullopt.
std::optional<int64_t> ParseStepDirName(const std::string& name) {
  constexpr char kPrefix[] = "step-";
  if (!StartsWith(name, kPrefix)) return std::nullopt;
  const std::string digits = name.substr(sizeof(kPrefix) - 1);
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

// The names in `dir` other than "." and "..", sorted.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("no directory ", dir));
    if (err == ENOTDIR) {
      return absl::FailedPreconditionError(absl::StrCat(dir, " is not a directory"));
    }
    return ErrnoError("cannot open directory", dir, err);
  }
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      const int err = errno;
      ::closedir(d);
      if (err != 0) return ErrnoError("cannot read directory", dir, err);
      break;
    }
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status FsyncFd(int fd, const std::string& path, bool is_directory) {
  while (::fsync(fd) != 0) {
    const int err = errno;
    if (err == EINTR) continue;
    // Some file systems cannot sync a directory; their renames are then as durable as
    // they get.
    if (is_directory && (err == EINVAL || err == EROFS)) return absl::OkStatus();
    return ErrnoError("cannot fsync", path, err);
  }
  return absl::OkStatus();
}

absl::Status FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open directory", dir, errno);
  absl::Status s = FsyncFd(fd, dir, /*is_directory=*/true);
  ::close(fd);
  return s;
}

// Deletes a file or a directory tree; a missing path is fine.
absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot delete ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, const std::string& bytes, const std::string& path) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path, errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

struct FileSum {
  uint64_t size = 0;
  uint32_t crc32c = 0;
};

// Size and CRC-32C of a file, read in kChunkBytes chunks; fsyncs it when asked.
absl::StatusOr<FileSum> ChecksumFile(const std::string& path, bool fsync_it) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open", path, errno);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<char[]> buffer(new char[kChunkBytes]);
  FileSum sum;
  while (true) {
    const ssize_t n = ::read(fd, buffer.get(), kChunkBytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return ErrnoError("cannot read", path, err);
    }
    if (n == 0) break;
    sum.crc32c = Crc32cExtend(sum.crc32c, buffer.get(), static_cast<size_t>(n));
    sum.size += static_cast<uint64_t>(n);
  }
  if (fsync_it) {
    absl::Status s = FsyncFd(fd, path, /*is_directory=*/false);
    if (!s.ok()) {
      ::close(fd);
      return s;
    }
  }
  ::close(fd);
  return sum;
}

// Text-format parse errors as "manifest.textproto:line:column: message" (1-based).
class ManifestErrors : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (!first_.empty()) return;
    if (line < 0) {
      first_ = absl::StrCat(kCheckpointManifestName, ": ", message);
    } else {
      first_ = absl::StrCat(kCheckpointManifestName, ":", line + 1, ":", column + 1, ": ", message);
    }
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

absl::Status Corrupt(const std::string& reason) { return absl::DataLossError(reason); }

// Verification of one checkpoint directory; the error message is the reason only (the
// callers prefix the directory).
absl::StatusOr<CheckpointInfo> VerifyReason(const std::string& dir) {
  const std::string dir_name = BaseName(dir);
  const std::optional<int64_t> dir_step = ParseStepDirName(dir_name);
  if (!dir_step.has_value()) {
    return Corrupt(absl::StrCat("directory name ", dir_name, " is not step-<digits>"));
  }

  // The manifest, read with open() so that "missing" is told apart from other errors.
  const std::string manifest_path = JoinPath(dir, kCheckpointManifestName);
  std::string text;
  {
    const int fd = ::open(manifest_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) return Corrupt(absl::StrCat(kCheckpointManifestName, " is missing"));
      return Corrupt(
          absl::StrCat("cannot open ", kCheckpointManifestName, ": ", std::strerror(err)));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > kMaxManifestBytes) {
      ::close(fd);
      return Corrupt(
          absl::StrCat(kCheckpointManifestName, " is not a regular file of at most 64 MiB"));
    }
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    ::close(fd);
    if (got != text.size()) {
      return Corrupt(absl::StrCat("cannot read ", kCheckpointManifestName, " (", got, " of ",
                                  text.size(), " bytes)"));
    }
  }
  CheckpointInfo info;
  info.dir = dir;
  config::CheckpointManifest& m = info.manifest;
  {
    ManifestErrors errors;
    pb::TextFormat::Parser parser;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(text, &m)) {
      return Corrupt(errors.first().empty()
                         ? absl::StrCat(kCheckpointManifestName, " does not parse")
                         : errors.first());
    }
  }
  if (m.format_version() != 1) {
    return Corrupt(absl::StrCat(kCheckpointManifestName, ": format_version ", m.format_version(),
                                " is not 1"));
  }
  if (!m.has_step()) return Corrupt(absl::StrCat(kCheckpointManifestName, ": step is missing"));
  if (m.step() != *dir_step) {
    return Corrupt(absl::StrCat(kCheckpointManifestName, ": step ", m.step(),
                                " differs from the directory's step ", *dir_step));
  }
  info.step = m.step();

  // Manifest entries, then the directory's entries against them (cheap checks first).
  std::set<std::string> listed;
  for (int i = 0; i < m.files_size(); ++i) {
    const config::CheckpointFile& f = m.files(i);
    const std::string field = absl::StrCat(kCheckpointManifestName, ": files[", i, "]");
    if (!f.has_name() || f.name().empty() || f.name() == "." || f.name() == ".." ||
        f.name().find('/') != std::string::npos || f.name() == kCheckpointManifestName) {
      return Corrupt(absl::StrCat(field, ".name \"", f.name(), "\" is not a file name"));
    }
    if (!f.has_size()) return Corrupt(absl::StrCat(field, ".size is missing (", f.name(), ")"));
    if (!f.has_crc32c()) {
      return Corrupt(absl::StrCat(field, ".crc32c is missing (", f.name(), ")"));
    }
    if (!listed.insert(f.name()).second) {
      return Corrupt(absl::StrCat(field, ".name ", f.name(), " is listed twice"));
    }
  }
  absl::StatusOr<std::vector<std::string>> names = ListDirectory(dir);
  if (!names.ok()) return Corrupt(std::string(names.status().message()));
  for (const std::string& name : *names) {
    if (name != kCheckpointManifestName && listed.count(name) == 0) {
      return Corrupt(
          absl::StrCat("unlisted file ", name, " (not in ", kCheckpointManifestName, ")"));
    }
  }
  for (const config::CheckpointFile& f : m.files()) {
    struct stat st;
    if (::lstat(JoinPath(dir, f.name()).c_str(), &st) != 0) {
      const int err = errno;
      if (err == ENOENT) return Corrupt(absl::StrCat("file ", f.name(), " is missing"));
      return Corrupt(absl::StrCat("cannot stat file ", f.name(), ": ", std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
      return Corrupt(absl::StrCat("file ", f.name(), " is not a regular file"));
    }
    if (static_cast<uint64_t>(st.st_size) != f.size()) {
      return Corrupt(absl::StrCat("file ", f.name(), ": size ", st.st_size,
                                  " bytes, manifest says ", f.size()));
    }
  }
  for (const config::CheckpointFile& f : m.files()) {
    absl::StatusOr<FileSum> sum = ChecksumFile(JoinPath(dir, f.name()), /*fsync_it=*/false);
    if (!sum.ok()) return Corrupt(std::string(sum.status().message()));
    if (sum->size != f.size()) {
      return Corrupt(absl::StrCat("file ", f.name(), ": read ", sum->size, " bytes, manifest says ",
                                  f.size()));
    }
    if (sum->crc32c != f.crc32c()) {
      return Corrupt(absl::StrFormat("file %s: crc32c 0x%08x, manifest says 0x%08x", f.name(),
                                     sum->crc32c, f.crc32c()));
    }
  }
  return info;
}

}  // namespace

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

std::string CheckpointInfo::FilePath(const std::string& name) const { return JoinPath(dir, name); }

// ---------------------------------------------------------------------------------------
// PendingCheckpoint

PendingCheckpoint::PendingCheckpoint(std::string dir, int64_t step, std::shared_ptr<LiveSet> live)
    : dir_(std::move(dir)), step_(step), live_(std::move(live)) {}

PendingCheckpoint::PendingCheckpoint(PendingCheckpoint&& other) noexcept
    : dir_(std::move(other.dir_)), step_(other.step_), live_(std::move(other.live_)) {
  other.live_.reset();
}

PendingCheckpoint& PendingCheckpoint::operator=(PendingCheckpoint&& other) noexcept {
  if (this != &other) {
    Abandon();
    dir_ = std::move(other.dir_);
    step_ = other.step_;
    live_ = std::move(other.live_);
    other.live_.reset();
  }
  return *this;
}

PendingCheckpoint::~PendingCheckpoint() { Abandon(); }

void PendingCheckpoint::Abandon() {
  if (live_ == nullptr) return;
  live_->erase(dir_);
  live_.reset();
  // Best effort: a directory left behind is a stale ".tmp-*" that the next Commit deletes.
  (void)RemoveTree(dir_);
}

// ---------------------------------------------------------------------------------------
// CheckpointStore

CheckpointStore::CheckpointStore(std::string root, int keep_last)
    : root_(std::move(root)),
      keep_last_(keep_last),
      live_(std::make_shared<PendingCheckpoint::LiveSet>()) {
  PMOL_CHECK(keep_last_ >= 1);
  PMOL_CHECK(!root_.empty());
}

std::string CheckpointStore::FreshTempPath(const std::string& kind, int64_t step) const {
  return JoinPath(root_, absl::StrCat(kTempPrefix, kind, "-", step, "-", ::getpid(), "-",
                                      temp_counter.fetch_add(1)));
}

absl::StatusOr<PendingCheckpoint> CheckpointStore::Begin(int64_t step) {
  if (step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint step ", step, " is negative (root ", root_, ")"));
  }
  struct stat st;
  if (::stat(root_.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint root ", root_, " exists and is not a directory"));
    }
  } else if (errno == ENOENT) {
    absl::Status made = MakeDirectories(root_);
    if (!made.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create checkpoint root ", root_, ": ", made.message()));
    }
    PMOL_RETURN_IF_ERROR(FsyncDirectory(ParentDir(root_)));
  } else {
    return ErrnoError("cannot stat checkpoint root", root_, errno);
  }
  for (int attempt = 0;; ++attempt) {
    const std::string dir = FreshTempPath("step", step);
    if (::mkdir(dir.c_str(), 0755) == 0) {
      live_->insert(dir);
      return PendingCheckpoint(dir, step, live_);
    }
    if (errno != EEXIST || attempt >= 100) return ErrnoError("cannot create", dir, errno);
  }
}

absl::StatusOr<CheckpointInfo> CheckpointStore::Commit(
    PendingCheckpoint pending, const std::map<std::string, std::string>& metadata) {
  if (pending.live_ == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint ", pending.dir_, " was already committed or moved from (root ", root_, ")"));
  }
  if (pending.live_ != live_) {
    return absl::InvalidArgumentError(absl::StrCat("pending checkpoint ", pending.dir_,
                                                   " was begun by another store than ", root_));
  }
  const std::string& tmp = pending.dir_;
  const int64_t step = pending.step_;

  // 1. The caller's files: plain files only; size, CRC-32C and fsync of each.
  PMOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(tmp));
  config::CheckpointManifest manifest;
  manifest.set_format_version(1);
  manifest.set_step(step);
  for (const std::string& name : names) {
    const std::string path = JoinPath(tmp, name);
    if (name == kCheckpointManifestName) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint file ", path, ": the name ",
                                                     kCheckpointManifestName, " is reserved"));
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return ErrnoError("cannot stat", path, errno);
    if (S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint entry ", path, " is a directory; a checkpoint holds plain files only"));
    }
    if (!S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint entry ", path, " is not a regular file (symlink, fifo, ...)"));
    }
  }
  for (const std::string& name : names) {
    PMOL_ASSIGN_OR_RETURN(FileSum sum, ChecksumFile(JoinPath(tmp, name), /*fsync_it=*/true));
    config::CheckpointFile* f = manifest.add_files();
    f->set_name(name);
    f->set_size(sum.size);
    f->set_crc32c(sum.crc32c);
  }
  for (const auto& [key, value] : metadata) (*manifest.mutable_metadata())[key] = value;
  manifest.set_wall_time(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());

  // 2. The manifest, written last.
  std::string text;
  PMOL_CHECK(pb::TextFormat::PrintToString(manifest, &text));
  const std::string manifest_path = JoinPath(tmp, kCheckpointManifestName);
  {
    const int fd = ::open(manifest_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoError("cannot create", manifest_path, errno);
    absl::Status s = WriteAll(fd, text, manifest_path);
    if (s.ok()) s = FsyncFd(fd, manifest_path, /*is_directory=*/false);
    if (::close(fd) != 0 && s.ok()) s = ErrnoError("cannot close", manifest_path, errno);
    PMOL_RETURN_IF_ERROR(s);
  }
  // 3. The temporary directory's entries.
  PMOL_RETURN_IF_ERROR(FsyncDirectory(tmp));

  // 4. Publish. From here on the pending directory is no longer the caller's.
  const std::string final_dir = JoinPath(root_, CheckpointDirName(step));
  PMOL_RETURN_IF_ERROR(Publish(tmp, final_dir, step));
  live_->erase(tmp);
  pending.live_.reset();

  // 5. Prune.
  absl::Status pruned = Prune(final_dir);
  if (!pruned.ok()) {
    return absl::InternalError(absl::StrCat("published checkpoint ", final_dir,
                                            ", but pruning failed: ", pruned.message()));
  }
  CheckpointInfo info;
  info.step = step;
  info.dir = final_dir;
  info.manifest = std::move(manifest);
  return info;
}

absl::Status CheckpointStore::Publish(const std::string& tmp, const std::string& final_dir,
                                      int64_t step) {
  struct stat st;
  const bool exists = ::lstat(final_dir.c_str(), &st) == 0;
  if (!exists) {
    if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return ErrnoError(absl::StrCat("cannot rename ", tmp, " to"), final_dir, errno);
    }
    return FsyncDirectory(root_);
  }
  if (!disable_rename_exchange_) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
      PMOL_RETURN_IF_ERROR(FsyncDirectory(root_));
      // `tmp` now holds the replaced checkpoint: a stale ".tmp-*" if this fails.
      (void)RemoveTree(tmp);
      return absl::OkStatus();
    }
    const int err = errno;
    if (err != EINVAL && err != ENOSYS && err != EOPNOTSUPP) {
      return ErrnoError(absl::StrCat("cannot exchange ", tmp, " with"), final_dir, err);
    }
  }
  // No RENAME_EXCHANGE here: the old one goes aside, the new one in.
  const std::string aside = FreshTempPath("replaced", step);
  if (::rename(final_dir.c_str(), aside.c_str()) != 0) {
    return ErrnoError(absl::StrCat("cannot rename ", final_dir, " to"), aside, errno);
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    const int err = errno;
    ::rename(aside.c_str(), final_dir.c_str());
    return ErrnoError(absl::StrCat("cannot rename ", tmp, " to"), final_dir, err);
  }
  PMOL_RETURN_IF_ERROR(FsyncDirectory(root_));
  (void)RemoveTree(aside);
  return absl::OkStatus();
}

absl::Status CheckpointStore::Prune(const std::string& committed_dir) {
  PMOL_ASSIGN_OR_RETURN(auto published, ListOrError());
  int kept = 1;  // committed_dir
  bool renamed = false;
  for (const auto& [step, dir] : published) {
    if (dir == committed_dir) continue;
    if (kept < keep_last_) {
      ++kept;
      continue;
    }
    const std::string aside = FreshTempPath("prune", step);
    if (::rename(dir.c_str(), aside.c_str()) != 0) {
      return ErrnoError(absl::StrCat("cannot rename ", dir, " to"), aside, errno);
    }
    renamed = true;
  }
  if (renamed) PMOL_RETURN_IF_ERROR(FsyncDirectory(root_));
  // Every ".tmp-*" entry that is not an open PendingCheckpoint of this store: the pruned
  // ones above, and those of killed runs.
  PMOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(root_));
  for (const std::string& name : names) {
    if (!StartsWith(name, kTempPrefix)) continue;
    const std::string path = JoinPath(root_, name);
    if (live_->count(path) != 0) continue;
    PMOL_RETURN_IF_ERROR(RemoveTree(path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> CheckpointStore::ListOrError() const {
  std::vector<std::pair<int64_t, std::string>> published;
  absl::StatusOr<std::vector<std::string>> names = ListDirectory(root_);
  if (!names.ok()) {
    if (absl::IsNotFound(names.status())) return published;
    return absl::Status(names.status().code(),
                        absl::StrCat("checkpoint root: ", names.status().message()));
  }
  for (const std::string& name : *names) {
    const std::optional<int64_t> step = ParseStepDirName(name);
    if (!step.has_value()) continue;
    const std::string dir = JoinPath(root_, name);
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    published.emplace_back(*step, dir);
  }
  std::sort(published.begin(), published.end(), [](const auto& a, const auto& b) { return a > b; });
  return published;
}

std::vector<std::pair<int64_t, std::string>> CheckpointStore::List() const {
  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> published = ListOrError();
  if (!published.ok()) return {};
  return *std::move(published);
}

absl::StatusOr<CheckpointInfo> CheckpointStore::Verify(const std::string& dir) const {
  absl::StatusOr<CheckpointInfo> info = VerifyReason(dir);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat("checkpoint ", dir, ": ", info.status().message()));
  }
  return info;
}

absl::StatusOr<std::optional<CheckpointInfo>> CheckpointStore::LatestValid(
    std::vector<std::string>* warnings) const {
  PMOL_ASSIGN_OR_RETURN(auto published, ListOrError());
  for (const auto& [step, dir] : published) {
    absl::StatusOr<CheckpointInfo> info = VerifyReason(dir);
    if (info.ok()) return std::optional<CheckpointInfo>(*std::move(info));
    if (warnings != nullptr) {
      warnings->push_back(absl::StrCat("skipping checkpoint ", dir, ": ", info.status().message()));
    }
  }
  return std::optional<CheckpointInfo>();
}

}  // namespace pmol
