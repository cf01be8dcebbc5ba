// What a training checkpoint holds, and how it is written to and read from the
// checkpoint store (pmol/io/checkpoint_store.h: atomic publication, CRC-32C manifest):
//   trainable.safetensors    every trainable tensor under its name (adapter tensors,
//                            or all weights for full fine-tuning; score.weight)
//   expert-optimizer-ep<E>of<EP>-shard-D.safetensors  with expert parallelism, the
//                            same for the experts of expert-parallel rank E, sharded
//                            over its expert-data-parallel ranks D; such a checkpoint
//                            resumes with the same parallel.ep (dp and ZeRO may change)
//   optimizer-shard-R.safetensors  the AdamW state of rank R's shard of the flat
//                            trainable vector (dist/zero_optimizer.h): exp_avg,
//                            exp_avg_sq (and master for bf16/f16), 1-D, and step; the
//                            metadata holds its range (flat_begin, flat_end), the flat
//                            size and the tensor layout. One file (rank 0's) for ZeRO
//                            stage 0, one per rank for stages 1 and 2; a resumed run of
//                            any size reads the pieces that overlap its own shards.
//   trainer_state.json       step, sampler position (epoch, consumed), skipped steps,
//                            tokens seen, seed, world size
//   run_config.textproto     the effective run config (every field, defaults included)
// The learning-rate schedule is a function of the step, and dropout masks of (seed,
// micro-step), so step + sampler position + tensors are the whole state: a run resumed
// from a checkpoint takes exactly the steps the uninterrupted run takes.
// Resuming checks that the checkpoint's config describes the same training (model,
// adapter, objective, data, seed); the length of training, logging, evaluation,
// checkpointing and the parallel layout (dp, ep, ZeRO stage, buckets) may change.
// Several ranks: rank 0 opens and commits the checkpoint (a directory every rank can
// reach, e.g. on a shared file system), each rank writes its own optimizer shard, and
// the ranks agree on success before and after the commit.
#ifndef PMOL_TRAIN_TRAIN_CHECKPOINT_H_
#define PMOL_TRAIN_TRAIN_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dist/comm.h"
#include "dist/zero_optimizer.h"
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

// One optimizer of the run and the files its ranks write: <prefix><rank>.safetensors,
// rank = this rank's index among the optimizer's ranks.
struct CheckpointedOptimizer {
  dist::ZeroOptimizer* optimizer = nullptr;
  std::string file_prefix;
  int rank = 0;
};
// "optimizer-shard-" for the optimizer of the replicated tensors (ranks of the world).
CheckpointedOptimizer ReplicatedOptimizerFiles(dist::ZeroOptimizer* optimizer, int world_rank);
// "expert-optimizer-ep<ep_index>of<ep>-shard-" for the experts of one expert-parallel
// rank (ranks of its expert-data-parallel group).
CheckpointedOptimizer ExpertOptimizerFiles(dist::ZeroOptimizer* optimizer, int ep_index, int ep, int dp_index);

// A collective over `comm`: `store` is used on rank 0 only (may be null elsewhere).
// Returns the published directory on every rank; an error on any rank is returned on
// every rank (naming the rank), and then nothing is published.
absl::StatusOr<std::string> SaveTrainCheckpoint(CheckpointStore* store, dist::Comm& comm,
                                                const config::RunConfig& config,
                                                const TrainerState& state,
                                                const NamedTensors& trainable,
                                                const std::vector<CheckpointedOptimizer>& optimizers);

// Restores `trainable` (copied in place: names, shapes must match) and this rank's shard
// of the optimizer from a verified checkpoint directory and returns its trainer state.
// Nothing is changed on error (everything is read and checked before anything is
// copied).
absl::StatusOr<TrainerState> LoadTrainCheckpoint(const std::string& dir, int64_t step,
                                                 const config::RunConfig& config,
                                                 NamedTensors& trainable,
                                                 const std::vector<CheckpointedOptimizer>& optimizers);

// Empty when `saved` (a checkpoint's run_config.textproto) describes the same training
// as `current`; else the first differing line of the two effective configs.
std::string TrainingConfigDifference(const config::RunConfig& saved, const config::RunConfig& current);

}  // namespace pmol

#endif  // PMOL_TRAIN_TRAIN_CHECKPOINT_H_
