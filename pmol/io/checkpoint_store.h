// A directory of training checkpoints that survives SIGKILL (and power loss, on file
// systems that honour fsync) at any moment: a reader never takes a half-written
// checkpoint, and a corrupt or partial one is skipped, with a warning, in favour of the
// previous valid one.
//
// On-disk layout (format_version 1):
//   root/step-00000042/             a published checkpoint: the step zero-padded to 8
//                                   digits (more digits past 99999999)
//     manifest.textproto            config::CheckpointManifest in protobuf text format:
//                                   step, metadata, and every other file of the directory
//                                   with its size and CRC-32C (pmol/io/crc32c.h)
//     <the caller's files>          plain files only, any format, any writer
//   root/.tmp-step-<step>-<pid>-<n>/  a checkpoint being written (or left by a killed run)
//   root/.tmp-prune-..., .tmp-replaced-...  a checkpoint being deleted
// Only directories named step-<digits> count as checkpoints; everything else is ignored
// by readers, and every ".tmp-*" entry is removed by the next Commit.
//
// Commit protocol (Begin creates the private .tmp-step-* directory; the caller writes
// its files there, then Commit):
//   1. list the directory (plain files only, "manifest.textproto" is reserved), read
//      every file back in 4 MiB chunks for its size and CRC-32C, and fsync it;
//   2. write manifest.textproto last (full writes, EINTR retried) and fsync it;
//   3. fsync the temporary directory, so that its entries are durable;
//   4. rename it to root/step-<step> (one atomic rename; when that step is already
//      published, renameat2(RENAME_EXCHANGE) swaps the two directories atomically and the
//      old one, now under the temporary name, is deleted) and fsync root;
//   5. prune: each published checkpoint beyond keep_last is first renamed to a ".tmp-prune-*"
//      name (atomic: readers never see a half-deleted step-* directory) and then
//      deleted; stale ".tmp-*" entries of killed runs are deleted too.
// A crash before step 4 leaves only a ".tmp-*" directory that readers ignore; after it,
// the new checkpoint is complete. On file systems without RENAME_EXCHANGE (e.g. NFS), a
// same-step replacement falls back to two renames (old away, new in), and a crash
// between the two loses that step's checkpoint; earlier steps are unaffected (so only a
// root whose single checkpoint is being replaced can be left without one).
//
// Verification (Verify, LatestValid): the manifest parses, its format_version is 1, its
// step equals the directory's, every listed file exists as a plain file with the listed
// size and CRC-32C, and the directory holds no entry the manifest does not list (an extra
// file means that something other than Commit wrote there, so the checkpoint is treated
// as corrupt rather than trusted).
//
// Concurrency: one writer per root (one CheckpointStore committing; not thread-safe: a
// second writer's Commit would delete the first one's ".tmp-*" directories), any
// number of readers in other processes. A reader racing with a writer's pruning may see
// a candidate vanish (it is then skipped with a warning) or get a checkpoint that is
// deleted right after; keep_last >= 2 gives readers room.
#ifndef PMOL_IO_CHECKPOINT_STORE_H_
#define PMOL_IO_CHECKPOINT_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/checkpoint_manifest.pb.h"

namespace pmol {

// The manifest's file name inside a checkpoint directory (reserved: callers cannot
// write a file of that name).
inline constexpr char kCheckpointManifestName[] = "manifest.textproto";

struct CheckpointInfo {
  int64_t step = 0;
  std::string dir;  // the published directory
  config::CheckpointManifest manifest;
  std::string FilePath(const std::string& name) const;  // dir + "/" + name
};

// A checkpoint being written: the caller writes any files into dir() (a private
// temporary directory under the store's root), with any writer, then passes it to
// CheckpointStore::Commit. Move-only; destroying one that was not committed deletes
// its directory.
class PendingCheckpoint {
 public:
  PendingCheckpoint(PendingCheckpoint&& other) noexcept;
  PendingCheckpoint& operator=(PendingCheckpoint&& other) noexcept;
  PendingCheckpoint(const PendingCheckpoint&) = delete;
  PendingCheckpoint& operator=(const PendingCheckpoint&) = delete;
  ~PendingCheckpoint();

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }

 private:
  friend class CheckpointStore;
  // The temporary directories of a store's uncommitted checkpoints, which its pruning
  // of stale ".tmp-*" entries spares.
  using LiveSet = std::set<std::string>;

  PendingCheckpoint(std::string dir, int64_t step, std::shared_ptr<LiveSet> live);
  // Deletes the directory (if still owned) and forgets it.
  void Abandon();

  std::string dir_;
  int64_t step_ = 0;
  std::shared_ptr<LiveSet> live_;  // null once moved from or committed
};

class CheckpointStore {
 public:
  // root: the checkpoint directory (created on first Begin). keep_last >= 1 (aborts
  // otherwise; RunConfig validation checks checkpoint.keep_last): after each commit
  // only the newest keep_last published checkpoints remain, always including the one
  // just committed (when it is not the newest step, it takes one of the keep_last
  // places and the newest others fill the rest).
  CheckpointStore(std::string root, int keep_last);

  // Creates root if missing and a fresh temporary directory for `step` (>= 0).
  absl::StatusOr<PendingCheckpoint> Begin(int64_t step);

  // Publishes `pending` as root/step-<step> by the protocol above, with `metadata` in
  // its manifest, replacing a checkpoint already published at that step. Errors
  // (a subdirectory or a non-regular file in pending.dir(), a file named
  // manifest.textproto, I/O failures) name the path; the temporary directory is then
  // deleted and nothing already published changes.
  absl::StatusOr<CheckpointInfo> Commit(PendingCheckpoint pending,
                                        const std::map<std::string, std::string>& metadata);

  // Published checkpoints (step, directory), newest first, WITHOUT verification (names
  // parsed only). Empty when root is missing or unreadable.
  std::vector<std::pair<int64_t, std::string>> List() const;

  // Verifies one published checkpoint directory; the error names the directory and the
  // file or manifest field that failed.
  absl::StatusOr<CheckpointInfo> Verify(const std::string& dir) const;

  // The newest checkpoint that verifies; std::nullopt when there is none (an empty or
  // missing root is not an error; a root that is not a readable directory is). Each
  // skipped candidate appends "skipping checkpoint DIR: <reason>" to *warnings (which
  // may be null).
  absl::StatusOr<std::optional<CheckpointInfo>> LatestValid(
      std::vector<std::string>* warnings) const;

  const std::string& root() const { return root_; }

  // Tests only: take the two-rename replacement path even where RENAME_EXCHANGE works.
  void set_disable_rename_exchange_for_testing(bool disable) { disable_rename_exchange_ = disable; }

 private:
  absl::StatusOr<std::vector<std::pair<int64_t, std::string>>> ListOrError() const;
  // Swaps or moves `tmp` into `final_dir`; see step 4 of the protocol.
  absl::Status Publish(const std::string& tmp, const std::string& final_dir, int64_t step);
  // Step 5: keeps `committed_dir` and the newest others up to keep_last.
  absl::Status Prune(const std::string& committed_dir);
  std::string FreshTempPath(const std::string& kind, int64_t step) const;

  std::string root_;
  int keep_last_;
  bool disable_rename_exchange_ = false;
  std::shared_ptr<PendingCheckpoint::LiveSet> live_;
};

// The published directory name of `step`: "step-" and the step zero-padded to 8 digits.
std::string CheckpointDirName(int64_t step);

}  // namespace pmol

#endif  // PMOL_IO_CHECKPOINT_STORE_H_
