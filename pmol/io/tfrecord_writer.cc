// TFRecord framing and a buffered, fsync-able record appender; see tfrecord_writer.h.
#include "pmol/io/tfrecord_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pmol/io/crc32c.h"

namespace pmol {
namespace {

void AppendLittleEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

std::string TfRecordHeader(std::string_view record) {
  std::string header;
  header.reserve(12);
  AppendLittleEndian(record.size(), 8, &header);
  AppendLittleEndian(MaskCrc32c(Crc32c(header)), 4, &header);
  return header;
}

std::string TfRecordFooter(std::string_view record) {
  std::string footer;
  footer.reserve(4);
  AppendLittleEndian(MaskCrc32c(Crc32c(record)), 4, &footer);
  return footer;
}

absl::StatusOr<std::unique_ptr<TfRecordWriter>> TfRecordWriter::Open(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "wbe");  // e: O_CLOEXEC
  if (file == nullptr) return ErrnoError("cannot create", path);
  return std::unique_ptr<TfRecordWriter>(new TfRecordWriter(path, file));
}

TfRecordWriter::~TfRecordWriter() { std::fclose(file_); }

absl::Status TfRecordWriter::Write(std::string_view record) {
  const std::string header = TfRecordHeader(record);
  const std::string footer = TfRecordFooter(record);
  for (std::string_view part : {std::string_view(header), record, std::string_view(footer)}) {
    if (part.empty()) continue;
    if (std::fwrite(part.data(), 1, part.size(), file_) != part.size()) {
      return ErrnoError("cannot write a record to", path_);
    }
  }
  return absl::OkStatus();
}

absl::Status TfRecordWriter::Flush() {
  if (std::fflush(file_) != 0) return ErrnoError("cannot write", path_);
  if (::fsync(::fileno(file_)) != 0) return ErrnoError("cannot fsync", path_);
  return absl::OkStatus();
}

}  // namespace pmol
