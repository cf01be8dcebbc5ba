// Atomic file replacement: write to "<path>.tmp.<pid>", fsync it, rename over <path>,
// fsync the directory. A crash at any point leaves either the old file or the new one.
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

}  // namespace pmol

#endif  // PMOL_IO_ATOMIC_FILE_H_
