// Single-file and sharded safetensors model folders; see weight_files.h.
#include "pmol/io/weight_files.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"

namespace pmol {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

absl::StatusOr<WeightFiles> WeightFiles::Open(const std::string& dir) {
  WeightFiles w;
  const std::string single = absl::StrCat(dir, "/model.safetensors");
  const std::string index = absl::StrCat(dir, "/model.safetensors.index.json");
  if (Exists(index)) {
    w.description_ = index;
    PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index));
    nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object())
      return absl::InvalidArgumentError(absl::StrCat(index, ": not a JSON object"));
    auto map_it = json.find("weight_map");
    if (map_it == json.end() || !map_it->is_object())
      return absl::InvalidArgumentError(absl::StrCat(index, ": field 'weight_map' missing or not an object"));
    std::map<std::string, const SafetensorsFile*> opened;
    for (auto it = map_it->begin(); it != map_it->end(); ++it) {
      if (!it->is_string())
        return absl::InvalidArgumentError(absl::StrCat(index, ": weight_map['", it.key(), "'] is not a file name"));
      const std::string shard = it->get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..")
        return absl::InvalidArgumentError(absl::StrCat(index, ": weight_map['", it.key(),
                                                       "'] names '", shard, "', not a file in ", dir));
      auto found = opened.find(shard);
      if (found == opened.end()) {
        PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> f,
                              SafetensorsFile::Open(absl::StrCat(dir, "/", shard)));
        w.files_.push_back(f);
        found = opened.emplace(shard, f.get()).first;
      }
      if (found->second->Find(it.key()) == nullptr)
        return absl::InvalidArgumentError(absl::StrCat(index, ": weight_map says '", it.key(),
                                                       "' is in ", shard, ", but it is not there"));
      w.owner_[it.key()] = found->second;
    }
    return w;
  }
  w.description_ = single;
  PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> f, SafetensorsFile::Open(single));
  for (const SafetensorsEntry& e : f->entries()) w.owner_[e.name] = f.get();
  w.files_.push_back(std::move(f));
  return w;
}

const SafetensorsFile* WeightFiles::FileOf(const std::string& name) const {
  auto it = owner_.find(name);
  return it == owner_.end() ? nullptr : it->second;
}

const SafetensorsEntry* WeightFiles::Find(const std::string& name) const {
  const SafetensorsFile* f = FileOf(name);
  return f == nullptr ? nullptr : f->Find(name);
}

std::vector<std::string> WeightFiles::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, file] : owner_) names.push_back(name);
  return names;
}

}  // namespace pmol
