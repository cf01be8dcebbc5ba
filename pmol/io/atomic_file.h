// Files written safely: atomic replacement (write to "<path>.tmp.<pid>", fsync it, rename
// over <path>, fsync the directory; a crash at any point leaves either the old file or
// the new one), whole-file reads, and creating a directory with its parents.
#ifndef PMOL_IO_ATOMIC_FILE_H_
#define PMOL_IO_ATOMIC_FILE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pmol {

// Writes the concatenation of `parts`.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<std::string_view>& parts);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Creates `dir` and any missing parents; an existing directory is fine. With
// `outermost_created`, that is set to the outermost directory this call created ("" when
// `dir` existed), for RemoveEmptyDirectories to undo it.
absl::Status MakeDirectories(const std::string& dir, std::string* outermost_created = nullptr);

// Removes `dir`, then its parents up to and including `outermost`, each only while it is
// empty (a directory something was written into stays); errors are ignored. For a command
// that failed before writing anything, to leave no empty output folders behind.
void RemoveEmptyDirectories(const std::string& dir, const std::string& outermost);

}  // namespace pmol

#endif  // PMOL_IO_ATOMIC_FILE_H_
