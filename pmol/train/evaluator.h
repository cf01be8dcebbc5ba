// Evaluation of a run on a held-out preference set: forward-only micro-batches
// (PreferenceStep::Evaluate) in dataset order, merged exactly into one EvalResult, and
// that result as JSON (the run's eval.json, read back by `pmol report`).
//
// Merging: metrics_accumulator.h (exact for any micro-batch size).
//
// eval.json ("format": "pmol-eval-v1"; a non-finite value is written as null):
//   {"format", "objective": "dpo"|"sft"|"reward", "pairs", "tokens",
//    "loss": {"total", "main", "group", "balance"},
//    "preferences": [names], "groups": [names] (PMoL; [] otherwise),
//    "router_layers": [adapted layer indices],
//    "per_preference": [split, ...] (one per name), "overall": split}
//   split = {"pairs", "loss" (mean per-pair main loss; null for SFT), "accuracy",
//            "margin", "reward_chosen", "reward_rejected" (means; null without pairs or
//            for SFT), "router_positions", "router_mass": [groups..., empty],
//            "router_mass_by_layer": [[groups..., empty] per router layer]}
#ifndef PMOL_TRAIN_EVALUATOR_H_
#define PMOL_TRAIN_EVALUATOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dist/comm.h"
#include "pmol/data/preference_dataset.h"
#include "pmol/train/metrics_accumulator.h"
#include "pmol/train/preference_step.h"
#include "pmol/train/run_components.h"

namespace pmol {

// Reference log-probs of the eval pairs, by index into the eval set, computed once
// before training (needed for full fine-tuning with precompute_reference, which keeps
// no frozen copy; optional otherwise).
struct EvalReference {
  std::vector<double> chosen, rejected;
};

// Evaluates the first `max_pairs` pairs of `eval_set` (0: all) in order, in padded
// micro-batches of micro_batch_size rows of seq_len tokens. Leaves the adapters in
// evaluation mode and every gradient buffer as it was. Errors name the eval pair (index,
// source, line) that does not fit seq_len or has a label outside the expert groups.
// With `comm` (several ranks), rank r evaluates micro-batches r, r + N, ... and the
// figures are merged over the ranks (a collective): every rank gets the whole result.
absl::StatusOr<EvalResult> EvaluateDataset(RunComponents& components,
                                           const data::PreferenceDataset& eval_set,
                                           int32_t micro_batch_size, int32_t seq_len,
                                           int32_t pad_id, int64_t max_pairs,
                                           const EvalReference* reference = nullptr,
                                           dist::Comm* comm = nullptr);

// The reference log-probs of the same pairs, batched the same way (DPO). For full
// fine-tuning without a frozen copy (precompute_reference) the model's current weights
// are the reference: call it before the first update. With `comm`, the micro-batches
// are shared out over the ranks as in EvaluateDataset and every rank gets every value.
absl::StatusOr<EvalReference> ComputeEvalReference(RunComponents& components,
                                                   const data::PreferenceDataset& eval_set,
                                                   int32_t micro_batch_size, int32_t seq_len,
                                                   int32_t pad_id, int64_t max_pairs,
                                                   dist::Comm* comm = nullptr);

std::string EvalResultToJson(const EvalResult& result);
// `where` (e.g. the file name) prefixes every error, which names the field.
absl::StatusOr<EvalResult> EvalResultFromJson(const std::string& json, const std::string& where);

// eval.json on disk: written atomically; read with errors naming the file and field.
absl::Status WriteEvalResult(const std::string& path, const EvalResult& result);
absl::StatusOr<EvalResult> ReadEvalResult(const std::string& path);

}  // namespace pmol

#endif  // PMOL_TRAIN_EVALUATOR_H_
