// The training loop of `pmol train`: SFT, reward modelling, DPO with LoRA, full
// fine-tuning or PMoL, from one RunConfig.
//
// One optimizer step s (0-based) of A = optimizer.grad_accumulation_steps micro-batches:
//   zero the gradients; for each micro-batch a: draw data.micro_batch_size pairs from the
//   sampler, pad them to the longest sequence of the batch (rounded up to 8), dropout
//   masks of micro-step s*A + a, gradients += (1/A) dL/dtheta (PreferenceStep);
//   g_norm = global gradient norm, clipped to optimizer.max_grad_norm;
//   if the loss or g_norm is not finite the step is skipped (no update; the run stops
//   after optimizer.max_skipped_steps such steps); else AdamW with lr(s) (lr_schedule.h).
// Length: optimizer.max_steps, or ceil(epochs * pairs / (micro_batch_size * A)) steps.
// Every logging.every_steps: the progress line and the metrics (JSONL, TensorBoard),
// averaged over the logged steps' pairs; every eval.every_steps (and at the end): the
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
#include "proto/run_config.pb.h"

namespace pmol {

struct TrainerOptions {
  std::ostream* out = nullptr;  // progress, summaries and warnings; null: std::cout
  // Set (e.g. by a SIGTERM / SIGINT handler) to stop after the current step with a
  // checkpoint; Run() then returns CancelledError.
  const volatile std::sig_atomic_t* stop_requested = nullptr;
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
