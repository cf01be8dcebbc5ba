// Writing and reading a training checkpoint's files; see train_checkpoint.h.
#include "pmol/train/train_checkpoint.h"

#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"
#include "proto/run_config_io.h"

namespace pmol {
namespace {

constexpr char kTrainable[] = "trainable.safetensors";
constexpr char kOptimizer[] = "optimizer.safetensors";
constexpr char kState[] = "trainer_state.json";
constexpr char kConfig[] = "run_config.textproto";

// The config without the fields that may change between a run and its resumption.
config::RunConfig TrainingPart(config::RunConfig c) {
  c.clear_output_dir();
  c.clear_checkpoint();
  c.clear_logging();
  c.clear_eval();
  c.mutable_model()->clear_threads();
  c.mutable_optimizer()->clear_max_steps();
  c.mutable_optimizer()->clear_epochs();
  c.mutable_optimizer()->clear_max_skipped_steps();
  return c;
}

}  // namespace

std::string TrainingConfigDifference(const config::RunConfig& saved, const config::RunConfig& current) {
  const std::string a = config::EffectiveRunConfigToText(TrainingPart(saved));
  const std::string b = config::EffectiveRunConfigToText(TrainingPart(current));
  if (a == b) return "";
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  while (true) {
    const bool ha = static_cast<bool>(std::getline(sa, la));
    const bool hb = static_cast<bool>(std::getline(sb, lb));
    if (!ha && !hb) return "";
    if (!ha) la = "(nothing)";
    if (!hb) lb = "(nothing)";
    if (la != lb || !ha || !hb) return absl::StrCat("checkpoint has `", la, "`, this run `", lb, "`");
  }
}

absl::StatusOr<CheckpointInfo> SaveTrainCheckpoint(CheckpointStore& store,
                                                   const config::RunConfig& config,
                                                   const TrainerState& state,
                                                   const NamedTensors& trainable,
                                                   const AdamW& optimizer) {
  PMOL_ASSIGN_OR_RETURN(PendingCheckpoint pending, store.Begin(state.step));
  const std::string dir = pending.dir();
  PMOL_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + kTrainable, trainable, {{"format", "pt"}}));
  PMOL_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + kOptimizer, optimizer.NamedState()));
  nlohmann::json j;
  j["step"] = state.step;
  j["sampler_epoch"] = state.sampler.epoch;
  j["sampler_consumed"] = state.sampler.consumed;
  j["skipped_steps"] = state.skipped_steps;
  j["tokens_seen"] = state.tokens_seen;
  j["seed"] = state.seed;
  j["world_size"] = state.world_size;
  const std::string json = j.dump(2) + "\n";
  PMOL_RETURN_IF_ERROR(WriteFileAtomically(dir + "/" + kState, {json}));
  const std::string text = config::EffectiveRunConfigToText(config);
  PMOL_RETURN_IF_ERROR(WriteFileAtomically(dir + "/" + kConfig, {text}));
  return store.Commit(std::move(pending), {{"step", std::to_string(state.step)}});
}

absl::StatusOr<TrainerState> LoadTrainCheckpoint(const CheckpointInfo& checkpoint,
                                                 const config::RunConfig& config,
                                                 NamedTensors& trainable, AdamW& optimizer) {
  const std::string where = checkpoint.dir;
  // The config first: a checkpoint of another training is not resumed.
  PMOL_ASSIGN_OR_RETURN(config::RunConfig saved, config::ReadRunConfig(checkpoint.FilePath(kConfig)));
  const std::string diff = TrainingConfigDifference(saved, config);
  if (!diff.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": was written by a different training run (", diff,
        "); use another output_dir / checkpoint.dir, or start afresh with --resume=false"));
  }
  // Trainer state.
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(checkpoint.FilePath(kState)));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  TrainerState state;
  try {
    if (j.is_discarded()) throw std::runtime_error("not valid JSON");
    state.step = j.at("step").get<int64_t>();
    state.sampler.epoch = j.at("sampler_epoch").get<int64_t>();
    state.sampler.consumed = j.at("sampler_consumed").get<int64_t>();
    state.skipped_steps = j.at("skipped_steps").get<int64_t>();
    state.tokens_seen = j.at("tokens_seen").get<int64_t>();
    state.seed = j.at("seed").get<uint64_t>();
    state.world_size = j.at("world_size").get<int32_t>();
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(checkpoint.FilePath(kState), ": ", e.what()));
  }
  if (state.step != checkpoint.step) {
    return absl::DataLossError(absl::StrCat(checkpoint.FilePath(kState), ": step ", state.step,
                                            " but the checkpoint is for step ", checkpoint.step));
  }
  // Tensors: read and check everything, then copy.
  PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> weights,
                        SafetensorsFile::Open(checkpoint.FilePath(kTrainable)));
  NamedTensors loaded;
  for (auto& [name, tensor] : trainable) {
    const SafetensorsEntry* e = weights->Find(name);
    if (e == nullptr) {
      return absl::DataLossError(absl::StrCat(weights->path(), ": has no tensor ", name));
    }
    if (e->shape != tensor.shape()) {
      return absl::FailedPreconditionError(absl::StrCat(weights->path(), ": ", name, " has shape ",
                                                        ShapeString(e->shape), ", this run ",
                                                        ShapeString(tensor.shape())));
    }
    PMOL_ASSIGN_OR_RETURN(Tensor t, weights->Load(name, tensor.backend(), tensor.dtype()));
    loaded.push_back({name, t});
  }
  if (weights->entries().size() != trainable.size()) {
    return absl::DataLossError(absl::StrCat(weights->path(), ": holds ", weights->entries().size(),
                                            " tensors, this run trains ", trainable.size()));
  }
  PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> opt,
                        SafetensorsFile::Open(checkpoint.FilePath(kOptimizer)));
  NamedTensors opt_state;
  for (const SafetensorsEntry& e : opt->entries()) {
    PMOL_ASSIGN_OR_RETURN(Tensor t, opt->Load(e.name, trainable.empty() ? nullptr : trainable[0].second.backend(), e.dtype));
    opt_state.push_back({e.name, t.Clone()});
  }
  absl::Status s = optimizer.LoadState(opt_state);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(opt->path(), ": ", s.message()));
  for (size_t i = 0; i < trainable.size(); ++i) trainable[i].second.CopyFrom(loaded[i].second);
  return state;
}

}  // namespace pmol
