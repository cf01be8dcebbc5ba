// Atomic file replacement and whole-file reads; see atomic_file.h.
#include "pmol/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace pmol {
namespace {

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::vector<std::string_view>& parts) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  for (std::string_view part : parts) {
    const char* p = part.data();
    size_t left = part.size();
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        absl::Status s = ErrnoError("cannot write", tmp);
        ::close(fd);
        ::unlink(tmp.c_str());
        return s;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  if (::fsync(fd) != 0) {
    absl::Status s = ErrnoError("cannot fsync", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("cannot rename into place", path);
    ::unlink(tmp.c_str());
    return s;
  }
  int dir = ::open(DirName(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return ss.str();
}

absl::Status MakeDirectories(const std::string& dir, std::string* outermost_created) {
  std::error_code ec;
  if (outermost_created != nullptr) {
    // The outermost missing directory on the way down to dir.
    outermost_created->clear();
    for (std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
         !p.empty() && !std::filesystem::exists(p, ec); p = p.parent_path()) {
      *outermost_created = p.string();
      if (p == p.parent_path()) break;
    }
  }
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

void RemoveEmptyDirectories(const std::string& dir, const std::string& outermost) {
  if (outermost.empty()) return;
  const std::filesystem::path top = std::filesystem::path(outermost).lexically_normal();
  std::error_code ec;
  for (std::filesystem::path p = std::filesystem::path(dir).lexically_normal(); !p.empty();
       p = p.parent_path()) {
    // remove() deletes an empty directory only; a non-empty one ends the walk.
    if (!std::filesystem::is_directory(p, ec) || !std::filesystem::is_empty(p, ec) ||
        !std::filesystem::remove(p, ec)) {
      return;
    }
    if (p == top || p == p.parent_path()) return;
  }
}

}  // namespace pmol
