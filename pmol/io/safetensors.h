// safetensors files (https://github.com/huggingface/safetensors format):
//   [u64 little-endian N][N bytes JSON header][data]
//   header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//            "__metadata__": {"<key>": "<string>"}}, offsets relative to the data start.
// Reading maps the file and validates every entry against the file before anything is
// used; loading is zero-copy when the tensor is wanted on the CPU in its stored dtype.
// Writing goes to a temporary file that is fsync'ed and renamed into place, so a reader
// never sees a half-written file.
#ifndef PMOL_IO_SAFETENSORS_H_
#define PMOL_IO_SAFETENSORS_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/core/tensor.h"

namespace pmol {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  size_t begin = 0;  // byte offsets into the data section
  size_t end = 0;
};

class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  static absl::StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* Find(const std::string& name) const;

  // The tensor on `backend` in dtype `want`: a view of the mapped file when possible,
  // otherwise a converted copy. Unknown name is an error naming the file.
  absl::StatusOr<Tensor> Load(const std::string& name, Backend* backend, DType want) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const char* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any backend, any dtype) in the given order, atomically.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace pmol

#endif  // PMOL_IO_SAFETENSORS_H_
