// `pmol forward --model=DIR --tokens=tokens.json --out=logits.safetensors
//   [--device=cpu|cuda] [--threads=N] [--dtype=f32|f64]`
// tokens.json is a JSON list of equal-length lists of token ids; the output holds one f32
// tensor `logits` [rows, length, vocab].
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/common_flags.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_model.h"

DEFINE_string(model, "", "a model folder: config.json + model.safetensors (or sharded)");
DEFINE_string(tokens, "", "forward: JSON list of equal-length lists of token ids");
DECLARE_string(dtype);

namespace pmol {
namespace {

absl::Status ReadTokens(const std::string& path, std::vector<int32_t>* ids, int64_t* rows,
                        int64_t* length) {
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!json.is_array() || json.empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a non-empty list of lists of token ids"));
  *rows = static_cast<int64_t>(json.size());
  *length = -1;
  for (size_t r = 0; r < json.size(); ++r) {
    const nlohmann::json& row = json[r];
    if (!row.is_array() || row.empty())
      return absl::InvalidArgumentError(absl::StrCat(path, ": row ", r, " is not a non-empty list"));
    if (*length >= 0 && static_cast<int64_t>(row.size()) != *length)
      return absl::InvalidArgumentError(absl::StrCat(path, ": row ", r, " has ", row.size(),
                                                     " ids but row 0 has ", *length,
                                                     " (rows must have equal length)"));
    *length = static_cast<int64_t>(row.size());
    for (size_t c = 0; c < row.size(); ++c) {
      // Unsigned values are compared as unsigned: 2^64 - 1 read as int64_t would be -1.
      const nlohmann::json& id = row[c];
      const bool fits = id.is_number_unsigned()  ? id.get<uint64_t>() <= INT32_MAX
                        : id.is_number_integer() ? id.get<int64_t>() >= INT32_MIN && id.get<int64_t>() <= INT32_MAX
                                                 : false;
      if (!fits)
        return absl::InvalidArgumentError(absl::StrCat(path, ": row ", r, ", position ", c, " is not an integer token id"));
      ids->push_back(static_cast<int32_t>(row[c].get<int64_t>()));
    }
  }
  return absl::OkStatus();
}

absl::Status RunForward() {
  if (FLAGS_model.empty()) return absl::InvalidArgumentError("--model (a model folder) is required");
  if (FLAGS_tokens.empty()) return absl::InvalidArgumentError("--tokens (a JSON file) is required");
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out (a .safetensors path) is required");
  DType dtype;
  if (FLAGS_dtype == "f32") {
    dtype = DType::kF32;
  } else if (FLAGS_dtype == "f64") {
    dtype = DType::kF64;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype is '", FLAGS_dtype, "'; forward computes in f32 or f64"));
  }
  PMOL_ASSIGN_OR_RETURN(Backend * backend, BackendFromFlags());
  std::vector<int32_t> ids;
  int64_t rows = 0, length = 0;
  PMOL_RETURN_IF_ERROR(ReadTokens(FLAGS_tokens, &ids, &rows, &length));
  PMOL_ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load(FLAGS_model, backend, dtype));
  absl::StatusOr<Tensor> logits = model.Forward(ids, rows, length, nullptr);
  if (!logits.ok()) return absl::InvalidArgumentError(absl::StrCat(FLAGS_tokens, ": ", logits.status().message()));
  Tensor out = logits->ConvertTo(DType::kF32);
  return WriteSafetensors(FLAGS_out, {{"logits", out}});
}

}  // namespace

extern const Command kForwardCommand = {
    "forward", "logits of a model for a JSON list of token-id rows", &RunForward};

}  // namespace pmol
