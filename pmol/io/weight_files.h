// The weight files of a Hugging Face model folder: either one `model.safetensors`, or
// shards listed by `model.safetensors.index.json` ({"weight_map": {"<tensor>": "<file>"}}).
// Every shard is opened and validated up front; every name in the weight map must exist
// in the shard it points at.
#ifndef PMOL_IO_WEIGHT_FILES_H_
#define PMOL_IO_WEIGHT_FILES_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/io/safetensors.h"

namespace pmol {

class WeightFiles {
 public:
  static absl::StatusOr<WeightFiles> Open(const std::string& dir);

  // nullptr when no file holds `name`.
  const SafetensorsFile* FileOf(const std::string& name) const;
  const SafetensorsEntry* Find(const std::string& name) const;
  std::vector<std::string> Names() const;
  // "<dir>/model.safetensors" or the index file: what error messages should name.
  const std::string& description() const { return description_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> owner_;
  std::string description_;
};

}  // namespace pmol

#endif  // PMOL_IO_WEIGHT_FILES_H_
