// TFRecord files (TensorFlow's record framing; TensorBoard event files are TFRecords of
// serialized Event protos). Each record is
//   [u64 little-endian length n][u32 LE masked_crc32c(the 8 length bytes)]
//   [n data bytes][u32 LE masked_crc32c(data)]
// with masked_crc32c = MaskCrc32c(Crc32c(...)) from pmol/io/crc32c.h. Records are
// appended through stdio buffering; Flush() pushes them to the kernel and fsyncs.
#ifndef PMOL_IO_TFRECORD_WRITER_H_
#define PMOL_IO_TFRECORD_WRITER_H_

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pmol {

class TfRecordWriter {
 public:
  // Creates `path` (truncating an existing file). Errors name the path.
  static absl::StatusOr<std::unique_ptr<TfRecordWriter>> Open(const std::string& path);
  ~TfRecordWriter();  // closes the file (buffered records reach the kernel; no fsync)

  TfRecordWriter(const TfRecordWriter&) = delete;
  TfRecordWriter& operator=(const TfRecordWriter&) = delete;

  // Appends one record. Errors name the path.
  absl::Status Write(std::string_view record);
  // fflush + fsync: every record written so far is on disk.
  absl::Status Flush();

  const std::string& path() const { return path_; }

 private:
  TfRecordWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}

  std::string path_;
  std::FILE* file_;
};

// The 12-byte header and the 4-byte footer that frame `record` (exposed for tests).
std::string TfRecordHeader(std::string_view record);
std::string TfRecordFooter(std::string_view record);

}  // namespace pmol

#endif  // PMOL_IO_TFRECORD_WRITER_H_
