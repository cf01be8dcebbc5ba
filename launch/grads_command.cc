// `pmol grads --config=run.textproto --batch=batch.json [--adapter=adapter.safetensors]
//   --out=out.safetensors`: one step's losses and gradients, nothing updated.
// batch.json: {"pairs": [{"prompt": [ids], "chosen": [ids], "rejected": [ids],
// "preference": k}, ...]}; rows are right-padded with id 0 (never attended to).
// The output holds every trainable tensor under its name, its gradient under
// grad/<name>, and f32 scalars loss/total, loss/dpo|sft|reward, loss/group, loss/balance
// plus the step's metrics (rewards/..., router/...).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/common_flags.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/data/batching.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"
#include "pmol/train/run_components.h"
#include "proto/run_config_io.h"
#include "proto/run_config_validation.h"

DEFINE_string(config, "", "a run config in protobuf text format (proto/run_config.proto)");
DEFINE_string(batch, "", "grads: JSON {\"pairs\": [{prompt, chosen, rejected, preference}]}");
DEFINE_string(adapter, "", "grads: adapter tensors (safetensors) instead of the fresh init");

namespace pmol {
namespace {

absl::StatusOr<std::vector<int32_t>> ReadIds(const nlohmann::json& v, const std::string& where,
                                             bool allow_empty) {
  if (!v.is_array()) return absl::InvalidArgumentError(absl::StrCat(where, ": expected a list of token ids"));
  if (v.empty() && !allow_empty) return absl::InvalidArgumentError(absl::StrCat(where, ": is empty"));
  std::vector<int32_t> ids;
  for (size_t i = 0; i < v.size(); ++i) {
    const nlohmann::json& id = v[i];
    const bool fits = id.is_number_unsigned()  ? id.get<uint64_t>() <= INT32_MAX
                      : id.is_number_integer() ? id.get<int64_t>() >= 0 && id.get<int64_t>() <= INT32_MAX
                                               : false;
    if (!fits) return absl::InvalidArgumentError(absl::StrCat(where, "[", i, "]: not a token id (a non-negative integer)"));
    ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return ids;
}

// Reads batch.json into a padded batch; errors name the file and pairs[i].field.
absl::StatusOr<data::PreferenceBatch> ReadBatch(const std::string& path, int64_t vocab) {
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  if (!json.is_object() || !json.contains("pairs") || !json["pairs"].is_array() || json["pairs"].empty())
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected {\"pairs\": [ ... ]} with at least one pair"));
  data::PreferenceDataset dataset;
  int32_t seq = 0;
  const nlohmann::json& pairs = json["pairs"];
  for (size_t i = 0; i < pairs.size(); ++i) {
    const std::string at = absl::StrCat(path, ": pairs[", i, "]");
    const nlohmann::json& p = pairs[i];
    if (!p.is_object()) return absl::InvalidArgumentError(absl::StrCat(at, ": not an object"));
    data::TokenizedPair pair;
    for (const char* field : {"prompt", "chosen", "rejected", "preference"})
      if (!p.contains(field)) return absl::InvalidArgumentError(absl::StrCat(at, ".", field, ": missing"));
    PMOL_ASSIGN_OR_RETURN(pair.prompt, ReadIds(p["prompt"], at + ".prompt", false));
    PMOL_ASSIGN_OR_RETURN(pair.chosen, ReadIds(p["chosen"], at + ".chosen", false));
    PMOL_ASSIGN_OR_RETURN(pair.rejected, ReadIds(p["rejected"], at + ".rejected", false));
    for (const auto* ids : {&pair.prompt, &pair.chosen, &pair.rejected})
      for (int32_t id : *ids)
        if (id >= vocab)
          return absl::InvalidArgumentError(absl::StrCat(at, ": token id ", id,
                                                         " is outside the vocabulary [0, ", vocab, ")"));
    if (!p["preference"].is_number_integer())
      return absl::InvalidArgumentError(absl::StrCat(at, ".preference: expected an integer group index"));
    const int64_t pref = p["preference"].get<int64_t>();
    if (pref < 0 || pref > INT32_MAX)
      return absl::InvalidArgumentError(absl::StrCat(at, ".preference: ", pref, " is negative or too large"));
    pair.preference = static_cast<int32_t>(pref);
    seq = std::max<int32_t>(seq, pair.prompt.size() + std::max(pair.chosen.size(), pair.rejected.size()));
    dataset.pairs.push_back(std::move(pair));
  }
  std::vector<int64_t> indices(dataset.pairs.size());
  for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
  return data::MakePaddedBatch(dataset, indices, static_cast<int32_t>(indices.size()), seq,
                               /*pad_id=*/0);
}

absl::Status RunGrads() {
  if (FLAGS_config.empty()) return absl::InvalidArgumentError("--config (a run config, text proto) is required");
  if (FLAGS_batch.empty()) return absl::InvalidArgumentError("--batch (a JSON file) is required");
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out (a .safetensors path) is required");
  PMOL_ASSIGN_OR_RETURN(config::RunConfig config, config::ReadRunConfig(FLAGS_config));
  absl::Status valid = config::ValidateRunConfig(config);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(FLAGS_config, ": ", valid.message()));
  absl::StatusOr<std::unique_ptr<RunComponents>> built = BuildRunComponents(config, FLAGS_adapter);
  if (!built.ok()) {
    return absl::Status(built.status().code(),
                        absl::StrCat(FLAGS_config, ": ", built.status().message()));
  }
  RunComponents& run = **built;
  PMOL_ASSIGN_OR_RETURN(data::PreferenceBatch batch,
                        ReadBatch(FLAGS_batch, run.model->config().vocab_size));
  if (run.adapters && run.adapters->options().has_router()) {
    absl::Status in_range = CheckBatch(batch, run.num_preferences);
    if (!in_range.ok()) return absl::InvalidArgumentError(absl::StrCat(FLAGS_batch, ": ", in_range.message()));
  }
  if (run.adapters) run.adapters->SetTraining(true, config.seed(), 0);
  PMOL_ASSIGN_OR_RETURN(StepMetrics metrics, run.step->Run(batch, /*loss_scale=*/1.0));

  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& named : run.TrainableParams()) out.push_back(named);
  for (auto& [name, grad] : run.TrainableGrads()) out.push_back({"grad/" + name, grad});
  const StepOptions options = StepOptionsFromConfig(config.objective(), run.num_preferences);
  std::map<std::string, double> scalars = metrics.Named(options.kind, run.preference_names);
  scalars.emplace("loss/dpo", 0.0);  // always present, 0 for the other objectives
  for (const auto& [name, value] : scalars) {
    const float v = static_cast<float>(value);
    out.push_back({name, Tensor::FromHost(&v, {}, DType::kF32, run.backend)});
  }
  return WriteSafetensors(FLAGS_out, out);
}

}  // namespace

extern const Command kGradsCommand = {
    "grads", "one step's losses and gradients for a batch of preference pairs", &RunGrads};

}  // namespace pmol
