// The training loop of `pmol train`: SFT, reward modelling, DPO with LoRA, full
// fine-tuning or PMoL, from one RunConfig.
//
// Ranks: N (the world from mpirun / srun, or 1), each taking A micro-batches of B =
// data.micro_batch_size pairs per step; A = optimizer.grad_accumulation_steps, or
// data.global_batch_size / (B N) when that is set, so that G = B A N pairs per step.
// One optimizer step s (0-based):
//   zero the gradients; the step's G pairs are the sampler's next G (the same stream on
//   every rank and for any N); micro-batch m = a N + r (a < A, rank r) holds pairs
//   [m B, (m + 1) B) of them, padded to its longest sequence (rounded up to 8), with the
//   dropout masks of micro-step s A N + m, and adds (1 / (A N)) dL/dtheta; so the set of
//   micro-batches, and the step, do not depend on N;
//   the gradients are reduced over the ranks (bucket by bucket, started during the
//   backward of the micro-batch that makes them final, with parallel.overlap_reduction)
//   and the update is AdamW with lr(s)
//   (lr_schedule.h), sharded by parallel.zero_stage (dist/zero_optimizer.h), after
//   clipping the global gradient norm to optimizer.max_grad_norm; if the loss or the
//   norm is not finite the step is skipped on every rank (no update; the run stops after
//   optimizer.max_skipped_steps such steps).
// Expert parallelism (parallel.ep = E > 1, PMoL): the expert groups are placed on the E
// ranks of each expert-parallel group (dist/expert_placement.h), each rank keeps its
// experts only (pmol/adapters/pmol_linear_ep.h), and the experts get their own optimizer
// over the expert-data-parallel group (the routers stay with the world's); the clipping
// norm covers both. With parallel.preference_aware_sampling the step's pairs are
// reassigned to micro-batches so that pairs of preference p run on the ranks holding
// group p. Checkpoints hold the whole adapter (gathered) and resume with the same E.
// Length: optimizer.max_steps, or ceil(epochs * pairs / G) steps.
// Several ranks: only rank 0 prints and writes the metrics and outputs; metrics and
// evaluations are merged over all ranks; each rank writes its optimizer shard into the
// checkpoints. A run resumes on any number of ranks. Runs on different N agree up to
// the order in which the reductions add the ranks' gradients.
// Every logging.every_steps: the progress line and the metrics (JSONL, TensorBoard),
// averaged over the logged steps' pairs, with the window's peak device memory (the
// backend's peak is reset at each step's start and read at its end; the largest over the
// steps and the ranks) and the memory in use at its end; every eval.every_steps (and at the end): the
// held-out pairs (evaluator.h); every checkpoint.every_steps (and at the end, and when a
// stop is requested): a checkpoint (train_checkpoint.h). With checkpoint.resume the run
// continues from the newest valid checkpoint; the final weights are then bit for bit
// those of an uninterrupted run (same config, threads and machine).
// objective.precompute_reference: the frozen reference's log-probs of every train and
// eval pair are computed once, before training (and before a checkpoint is loaded), in
// dataset order.
// At the end, OUTPUT_DIR receives (run_outputs.h): the adapter folder (PMoL / LoRA), the
// PEFT form (LoRA), merged HF weights (LoRA, full), eval.json.
#ifndef PMOL_TRAIN_TRAINER_H_
#define PMOL_TRAIN_TRAINER_H_

#include <csignal>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "dist/comm.h"
#include "proto/run_config.pb.h"

namespace pmol {

struct TrainerOptions {
  std::ostream* out = nullptr;  // progress, summaries and warnings; null: std::cout
  // Set (e.g. by a SIGTERM / SIGINT handler) to stop after the current step with a
  // checkpoint; Run() then returns CancelledError.
  // (Every rank's flag counts: the ranks stop together.)
  const volatile std::sig_atomic_t* stop_requested = nullptr;
  // The ranks of the run (from dist/mpi_comm.h); null: this process alone.
  dist::Comm* world = nullptr;
};

struct TrainerResult {
  int64_t steps = 0;          // optimizer steps at the end (including resumed ones)
  int64_t skipped_steps = 0;
  int64_t resumed_from = -1;  // checkpoint step, -1 for a fresh run
  std::string output_dir;
};

// Trains as the config says (validated here first; errors name the field).
absl::StatusOr<TrainerResult> RunTraining(const config::RunConfig& config,
                                          const TrainerOptions& options);

}  // namespace pmol

#endif  // PMOL_TRAIN_TRAINER_H_
