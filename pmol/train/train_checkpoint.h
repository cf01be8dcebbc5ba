// What a training checkpoint holds, and how it is written to and read from the
// checkpoint store (pmol/io/checkpoint_store.h: atomic publication, CRC-32C manifest):
//   trainable.safetensors    every trainable tensor under its name (adapter tensors,
//                            or all weights for full fine-tuning; score.weight)
//   optimizer.safetensors    AdamW state (<name>.exp_avg, <name>.exp_avg_sq,
//                            <name>.master for bf16, step)
//   trainer_state.json       step, sampler position (epoch, consumed), skipped steps,
//                            tokens seen, seed, world size
//   run_config.textproto     the effective run config (every field, defaults included)
// The learning-rate schedule is a function of the step, and dropout masks of (seed,
// micro-step), so step + sampler position + tensors are the whole state: a run resumed
// from a checkpoint takes exactly the steps the uninterrupted run takes.
// Resuming checks that the checkpoint's config describes the same training (model,
// adapter, objective, data, seed); the length of training, logging, evaluation and
// checkpointing may change.
#ifndef PMOL_TRAIN_TRAIN_CHECKPOINT_H_
#define PMOL_TRAIN_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "pmol/data/sampler.h"
#include "pmol/io/checkpoint_store.h"
#include "pmol/optim/adamw.h"
#include "proto/run_config.pb.h"

namespace pmol {

struct TrainerState {
  int64_t step = 0;  // optimizer steps taken (including skipped ones)
  data::SamplerState sampler;
  int64_t skipped_steps = 0;
  int64_t tokens_seen = 0;
  uint64_t seed = 0;
  int32_t world_size = 1;
};

absl::StatusOr<CheckpointInfo> SaveTrainCheckpoint(CheckpointStore& store,
                                                   const config::RunConfig& config,
                                                   const TrainerState& state,
                                                   const NamedTensors& trainable,
                                                   const AdamW& optimizer);

// Restores `trainable` (copied in place: names, shapes must match) and the optimizer
// from a verified checkpoint and returns its trainer state. Nothing is changed on error
// (everything is read and checked before anything is copied).
absl::StatusOr<TrainerState> LoadTrainCheckpoint(const CheckpointInfo& checkpoint,
                                                 const config::RunConfig& config,
                                                 NamedTensors& trainable, AdamW& optimizer);

// Empty when `saved` (a checkpoint's run_config.textproto) describes the same training
// as `current`; else the first differing line of the two effective configs.
std::string TrainingConfigDifference(const config::RunConfig& saved, const config::RunConfig& current);

}  // namespace pmol

#endif  // PMOL_TRAIN_TRAIN_CHECKPOINT_H_
