// Writing and reading a training checkpoint's files; see train_checkpoint.h.
#include "pmol/train/train_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"
#include "proto/run_config_io.h"

namespace pmol {
namespace {

constexpr char kTrainable[] = "trainable.safetensors";
constexpr char kOptimizerPrefix[] = "optimizer-shard-";
constexpr char kExpertOptimizerPrefix[] = "expert-optimizer-";
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
  c.clear_parallel();
  return c;
}

// The names of the plain files in `dir`, sorted.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_regular_file()) names.push_back(entry.path().filename().string());
  }
  if (ec) return absl::NotFoundError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  std::sort(names.begin(), names.end());
  return names;
}

// The pieces of one optimizer's state in a checkpoint directory (`names`: its files).
struct OptimizerPieces {
  std::vector<dist::StatePiece> pieces;
  std::vector<std::shared_ptr<SafetensorsFile>> files;  // keep the mmaps alive
  int64_t step = -1;
};

constexpr char kLayoutHint[] =
    " (a checkpoint written with another parallel.ep? expert parallelism keeps each expert-parallel "
    "rank's optimizer state apart, so such a run resumes with the parallel.ep it was written with; dp and "
    "zero_stage may change)";

absl::StatusOr<OptimizerPieces> ReadOptimizerPieces(const std::string& dir, const std::vector<std::string>& names,
                                                    const CheckpointedOptimizer& part) {
  const dist::ZeroOptimizer& optimizer = *part.optimizer;
  OptimizerPieces out;
  for (const std::string& name : names) {
    if (name.rfind(part.file_prefix, 0) != 0) continue;
    PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> f, SafetensorsFile::Open(dir + "/" + name));
    out.files.push_back(f);
    auto meta = [&](const char* key) -> absl::StatusOr<std::string> {
      auto it = f->metadata().find(key);
      if (it == f->metadata().end()) return absl::DataLossError(absl::StrCat(f->path(), ": no metadata ", key));
      return it->second;
    };
    PMOL_ASSIGN_OR_RETURN(std::string layout, meta("layout"));
    if (layout != optimizer.layout_signature()) {
      return absl::FailedPreconditionError(absl::StrCat(
          f->path(), ": its optimizer state is laid out over other tensors than this run trains", kLayoutHint));
    }
    dist::StatePiece piece;
    PMOL_ASSIGN_OR_RETURN(std::string begin, meta("flat_begin"));
    PMOL_ASSIGN_OR_RETURN(std::string end, meta("flat_end"));
    if (!absl::SimpleAtoi(begin, &piece.begin) || !absl::SimpleAtoi(end, &piece.end) || piece.begin < 0 ||
        piece.end < piece.begin || piece.end > optimizer.flat_size()) {
      return absl::DataLossError(absl::StrCat(f->path(), ": bad range [", begin, ", ", end, ")"));
    }
    Backend* cpu = GetBackend(DeviceType::kCpu).value();
    for (const SafetensorsEntry& e : f->entries()) {
      PMOL_ASSIGN_OR_RETURN(Tensor t, f->Load(e.name, cpu, e.dtype));
      if (e.name == AdamW::kStepName) {
        const double s = t.ToDoubles()[0];
        if (out.step >= 0 && s != out.step) {
          return absl::DataLossError(absl::StrCat(f->path(), ": step ", s, ", other shards ", out.step));
        }
        out.step = static_cast<int64_t>(s);
      } else if (e.name == "exp_avg") {
        piece.exp_avg = t;
      } else if (e.name == "exp_avg_sq") {
        piece.exp_avg_sq = t;
      } else if (e.name == "master") {
        piece.master = t;
      } else {
        return absl::DataLossError(absl::StrCat(f->path(), ": unexpected tensor ", e.name));
      }
    }
    if (!piece.exp_avg.defined() || !piece.exp_avg_sq.defined()) {
      return absl::DataLossError(absl::StrCat(f->path(), ": exp_avg or exp_avg_sq is missing"));
    }
    out.pieces.push_back(piece);
  }
  if (out.pieces.empty()) {
    const bool expert = part.file_prefix.rfind(kExpertOptimizerPrefix, 0) == 0;
    return absl::DataLossError(absl::StrCat(dir, ": holds no ", part.file_prefix, "*.safetensors",
                                            expert ? kLayoutHint : " (a checkpoint of an older pmol?)"));
  }
  if (out.step < 0) return absl::DataLossError(absl::StrCat(dir, ": the optimizer shards hold no step"));
  return out;
}

}  // namespace

CheckpointedOptimizer ReplicatedOptimizerFiles(dist::ZeroOptimizer* optimizer, int world_rank) {
  return {optimizer, kOptimizerPrefix, world_rank};
}

CheckpointedOptimizer ExpertOptimizerFiles(dist::ZeroOptimizer* optimizer, int ep_index, int ep, int dp_index) {
  return {optimizer, absl::StrCat(kExpertOptimizerPrefix, "ep", ep_index, "of", ep, "-shard-"), dp_index};
}

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

absl::StatusOr<std::string> SaveTrainCheckpoint(CheckpointStore* store, dist::Comm& comm,
                                                const config::RunConfig& config,
                                                const TrainerState& state,
                                                const NamedTensors& trainable,
                                                const std::vector<CheckpointedOptimizer>& optimizers) {
  const bool root = comm.rank() == 0;
  // Rank 0 opens the temporary directory; every rank learns its name.
  std::optional<PendingCheckpoint> pending;
  absl::Status status = absl::OkStatus();
  if (root) {
    absl::StatusOr<PendingCheckpoint> begun = store->Begin(state.step);
    if (begun.ok()) {
      pending.emplace(std::move(*begun));
    } else {
      status = begun.status();
    }
  }
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(comm, status));
  const std::string dir = comm.BroadcastString(root ? pending->dir() : "", 0);
  // Each rank its optimizer shards; rank 0 the rest.
  for (const CheckpointedOptimizer& part : optimizers) {
    const dist::ZeroOptimizer& optimizer = *part.optimizer;
    if (!status.ok() || !optimizer.writes_state()) continue;
    const dist::StatePiece piece = optimizer.ShardState();
    NamedTensors tensors = {{"exp_avg", piece.exp_avg}, {"exp_avg_sq", piece.exp_avg_sq}};
    if (piece.master.defined()) tensors.emplace_back("master", piece.master);
    const double step = static_cast<double>(optimizer.step());
    tensors.emplace_back(AdamW::kStepName,
                         Tensor::FromHost(&step, {}, DType::kF64, GetBackend(DeviceType::kCpu).value()));
    status = WriteSafetensors(absl::StrCat(dir, "/", part.file_prefix, part.rank, ".safetensors"), tensors,
                              {{"flat_begin", std::to_string(piece.begin)},
                               {"flat_end", std::to_string(piece.end)},
                               {"flat_size", std::to_string(optimizer.flat_size())},
                               {"layout", optimizer.layout_signature()}});
  }
  if (root && status.ok()) {
    status = WriteSafetensors(dir + "/" + kTrainable, trainable, {{"format", "pt"}});
    if (status.ok()) {
      nlohmann::json j;
      j["step"] = state.step;
      j["sampler_epoch"] = state.sampler.epoch;
      j["sampler_consumed"] = state.sampler.consumed;
      j["skipped_steps"] = state.skipped_steps;
      j["tokens_seen"] = state.tokens_seen;
      j["seed"] = state.seed;
      j["world_size"] = state.world_size;
      status = WriteFileAtomically(dir + "/" + kState, {j.dump(2) + "\n"});
    }
    if (status.ok()) status = WriteFileAtomically(dir + "/" + kConfig, {config::EffectiveRunConfigToText(config)});
  }
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(comm, status));
  // Every file is written: rank 0 publishes.
  std::string published;
  if (root) {
    absl::StatusOr<CheckpointInfo> info = store->Commit(std::move(*pending), {{"step", std::to_string(state.step)}});
    status = info.status();
    if (info.ok()) published = info->dir;
  }
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(comm, status));
  return comm.BroadcastString(published, 0);
}

absl::StatusOr<TrainerState> LoadTrainCheckpoint(const std::string& dir, int64_t step,
                                                 const config::RunConfig& config,
                                                 NamedTensors& trainable,
                                                 const std::vector<CheckpointedOptimizer>& optimizers) {
  const std::string& where = dir;
  auto path = [&](const std::string& name) { return dir + "/" + name; };
  // The config first: a checkpoint of another training is not resumed.
  PMOL_ASSIGN_OR_RETURN(config::RunConfig saved, config::ReadRunConfig(path(kConfig)));
  const std::string diff = TrainingConfigDifference(saved, config);
  if (!diff.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": was written by a different training run (", diff,
        "); use another output_dir / checkpoint.dir, or start afresh with --resume=false"));
  }
  // Trainer state.
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path(kState)));
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
    return absl::DataLossError(absl::StrCat(path(kState), ": ", e.what()));
  }
  if (state.step != step) {
    return absl::DataLossError(absl::StrCat(path(kState), ": step ", state.step,
                                            " but the checkpoint is for step ", step));
  }
  // Tensors: read and check everything, then copy.
  PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> weights,
                        SafetensorsFile::Open(path(kTrainable)));
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
  // Optimizer pieces: every <prefix>*.safetensors of the directory, per optimizer; all
  // read and checked before any state changes.
  PMOL_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDirectory(dir));
  std::vector<OptimizerPieces> parts;
  for (const CheckpointedOptimizer& part : optimizers) {
    PMOL_ASSIGN_OR_RETURN(OptimizerPieces read, ReadOptimizerPieces(dir, names, part));
    parts.push_back(std::move(read));
  }
  for (size_t i = 0; i < optimizers.size(); ++i) {
    absl::Status s = optimizers[i].optimizer->LoadState(parts[i].pieces, parts[i].step);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
  }
  for (size_t i = 0; i < trainable.size(); ++i) trainable[i].second.CopyFrom(loaded[i].second);
  return state;
}

}  // namespace pmol
