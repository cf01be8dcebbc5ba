// safetensors reading (mmap + validation) and atomic writing; see safetensors.h.
// Every header field is checked against the file before use: a header that lies about
// sizes or offsets is an error naming the file and the tensor, never a wild read.
#include "pmol/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"

namespace pmol {
namespace {

using Json = nlohmann::json;

// Header size limit, as the reference implementation has (100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status ParseEntry(const std::string& path, const std::string& name, const Json& value,
                        size_t data_size, SafetensorsEntry* entry) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!value.is_object()) return Bad(path, absl::StrCat(where, ": entry is not an object"));
  entry->name = name;
  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string())
    return Bad(path, absl::StrCat(where, ": field 'dtype' missing or not a string"));
  const std::string dtype = dtype_it->get<std::string>();
  if (!ParseDTypeName(dtype, &entry->dtype))
    return Bad(path, absl::StrCat(where, ": unsupported dtype '", dtype,
                                  "' (pmol reads F32, F64, BF16, F16, I32)"));
  auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array())
    return Bad(path, absl::StrCat(where, ": field 'shape' missing or not a list"));
  uint64_t numel = 1;
  for (const Json& d : *shape_it) {
    if (!d.is_number_unsigned())
      return Bad(path, absl::StrCat(where, ": field 'shape' holds a non-integer or negative"));
    uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)
      return Bad(path, absl::StrCat(where, ": field 'shape' overflows"));
    numel *= dim;
    entry->shape.push_back(static_cast<int64_t>(dim));
  }
  auto off_it = value.find("data_offsets");
  if (off_it == value.end() || !off_it->is_array() || off_it->size() != 2 ||
      !(*off_it)[0].is_number_unsigned() || !(*off_it)[1].is_number_unsigned())
    return Bad(path, absl::StrCat(where, ": field 'data_offsets' must be [begin, end]"));
  uint64_t begin = (*off_it)[0].get<uint64_t>(), end = (*off_it)[1].get<uint64_t>();
  if (begin > end)
    return Bad(path, absl::StrCat(where, ": data_offsets [", begin, ", ", end, "] are reversed"));
  if (end > data_size)
    return Bad(path, absl::StrCat(where, ": data_offsets end ", end, " is past the data (",
                                  data_size, " bytes; file truncated?)"));
  const uint64_t want = numel * DTypeSize(entry->dtype);
  if (end - begin != want)
    return Bad(path, absl::StrCat(where, ": data_offsets span ", end - begin,
                                  " bytes but dtype ", dtype, " and shape ",
                                  ShapeString(entry->shape), " need ", want));
  entry->begin = begin;
  entry->end = end;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Bad(path, absl::StrCat("file is ", size, " bytes, too short for a safetensors header"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return absl::InternalError(absl::StrCat("cannot mmap ", path));
  file->map_ = map;
  file->map_size_ = size;
  const char* bytes = static_cast<const char*>(map);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_size > kMaxHeaderBytes || header_size > size - 8)
    return Bad(path, absl::StrCat("header length ", header_size, " exceeds the file (", size,
                                  " bytes; truncated or not a safetensors file?)"));
  Json header = Json::parse(bytes + 8, bytes + 8 + header_size, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return Bad(path, "header is not a JSON object");
  file->data_ = bytes + 8 + header_size;
  const size_t data_size = size - 8 - header_size;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Bad(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return Bad(path, absl::StrCat("__metadata__ field '", m.key(), "' is not a string"));
        file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    SafetensorsEntry entry;
    PMOL_RETURN_IF_ERROR(ParseEntry(path, it.key(), *it, data_size, &entry));
    file->index_[entry.name] = file->entries_.size();
    file->entries_.push_back(std::move(entry));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

absl::StatusOr<Tensor> SafetensorsFile::Load(const std::string& name, Backend* backend,
                                             DType want) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  const char* src = data_ + e->begin;
  if (want != e->dtype && (!IsFloating(want) || !IsFloating(e->dtype)))
    return Bad(path_, absl::StrCat("tensor '", name, "' is ", DTypeName(e->dtype),
                                   ", cannot be read as ", DTypeName(want)));
  const bool aligned = reinterpret_cast<uintptr_t>(src) % DTypeSize(e->dtype) == 0;
  if (backend->device() == DeviceType::kCpu && want == e->dtype && aligned) {
    return Tensor::Wrap(const_cast<char*>(src), e->shape, e->dtype, backend, shared_from_this());
  }
  // Stage the stored bytes on the target device, then convert there.
  Tensor stored = Tensor::FromHost(src, e->shape, e->dtype, backend);
  if (want == e->dtype) return stored;
  return stored.ConvertTo(want);
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::vector<std::string> blobs;
  blobs.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate or reserved tensor name '", name, "'"));
    std::string blob(tensor.nbytes(), '\0');
    if (!blob.empty()) tensor.CopyToHost(blob.data());
    header[name] = {{"dtype", std::string(DTypeName(tensor.dtype()))},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, offset + blob.size()}}};
    offset += blob.size();
    blobs.push_back(std::move(blob));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::string prefix(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  std::vector<std::string_view> parts = {prefix, text};
  for (const std::string& b : blobs) parts.push_back(b);
  return WriteFileAtomically(path, parts);
}

}  // namespace pmol
