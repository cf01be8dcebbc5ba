// One training step's losses and gradients on a micro-batch of preference pairs, for
// every objective and adapter kind (the same code serves PMoL, LoRA and full
// fine-tuning; DPO, SFT and reward modelling). Nothing is updated: gradients accumulate
// into the trainable tensors' gradient buffers, scaled by loss_scale (1/accumulation).
//
// Rows: the chosen sequences (prompt + chosen) of the pairs, then the rejected ones, as
// one [2B, T] forward (SFT: the chosen rows only). With share_prompt (DPO, REWARD) a pair
// is one row instead, [common prefix | chosen rest | rejected rest]: the rejected rest
// takes the positions that follow the prefix and does not attend to the chosen rest
// (llama_model.h TokenLayout), so each sequence sees the context it has on its own row
// and the prefix is computed once. Every figure below is then the same as with two rows
// (up to rounding): a prefix token counts twice wherever positions are counted
// (L_bal, tokens), and its gradient is the sum of both sequences'. Per objective:
//   DPO     L_dpo (dpo_loss.h) on summed response log-probs; the reference log-probs come
//           from the frozen base (adapters off; no second model copy) or, for full
//           fine-tuning, from a frozen reference model; or from a cache computed once.
//   SFT     mean over chosen-response tokens of -log p.
//   REWARD  Bradley-Terry on a value head score.weight [1, H] over the last token.
// With PMoL adapters, for every adapted module (router probabilities g of the forward):
//   L_group: mean over positions whose input token is a response token (labels = the
//            pair's preference), then mean over modules;
//   L_bal:   over all non-padding positions, mean over groups, then over modules;
//   L = L_main + group_weight * L_group + balance_weight * L_bal.
// Metrics: loss parts; rewards chosen/rejected/margins/accuracy (DPO: beta * policy-
// reference log-ratio; REWARD: the head's scores); router mass per group over response
// positions (mean over modules, and per layer the mean over that layer's modules); all
// overall and per preference; plus the counts and sums that merge micro-batches exactly.
// Evaluate computes the same metrics with a forward only (adapters in eval mode: no
// dropout) and touches no gradient.
#ifndef PMOL_TRAIN_PREFERENCE_STEP_H_
#define PMOL_TRAIN_PREFERENCE_STEP_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/adapters/pmol_adapters.h"
#include "pmol/data/batching.h"
#include "pmol/model/llama_model.h"
#include "pmol/objectives/dpo_loss.h"
#include "proto/run_config.pb.h"

namespace pmol {

enum class ObjectiveKind { kDpo, kSft, kReward };

struct StepOptions {
  ObjectiveKind kind = ObjectiveKind::kDpo;
  DpoOptions dpo;
  double group_loss_weight = 0.1;
  double group_label_smoothing = 0.1;
  double balance_loss_weight = 0.01;
  bool share_prompt = true;  // DPO, REWARD: one row per pair (see the file comment)
  // PMoL: labels lie in [0, num_preferences) (one per group). Without groups labels
  // only split the metrics and may be larger.
  int32_t num_preferences = 1;
};

StepOptions StepOptionsFromConfig(const config::ObjectiveConfig& objective,
                                  int32_t num_preferences);

// Figures of one step; sums are over pairs so that micro-batches can be merged.
struct StepMetrics {
  double loss = 0, main = 0, group = 0, balance = 0;  // main: dpo, sft or reward loss
  int64_t pairs = 0, tokens = 0;
  // Per preference p (index p), and overall (index num_preferences); SFT counts the
  // pairs and leaves the reward sums at 0:
  std::vector<int64_t> pref_pairs;
  std::vector<double> reward_chosen_sum, reward_rejected_sum, correct_sum;
  // Router mass over response positions, [preference (+ overall)][group (+ empty)].
  std::vector<std::vector<double>> router_mass;
  // The same per adapted layer: router_layers lists the adapted layers (ascending) and
  // router_mass_by_layer[p][j][k] is the mean over layer router_layers[j]'s modules.
  std::vector<int64_t> router_layers;
  std::vector<std::vector<std::vector<double>>> router_mass_by_layer;

  // For merging micro-batches exactly (pmol/train/evaluator.h):
  //   main_count: what `main` is a mean over: pairs (DPO, REWARD) or chosen-response
  //               tokens (SFT);
  //   main_sum[p]: sum of the per-pair main losses (DPO, REWARD; zeros for SFT);
  //   router_positions[p]: the response positions router_mass[p] averages over (also
  //               L_group's positions, p = overall);
  //   router_slot_sums[module][slot]: sum of g over non-padding positions (L_bal's M_i).
  int64_t main_count = 0;
  std::vector<double> main_sum;
  std::vector<int64_t> router_positions;
  std::vector<std::vector<double>> router_slot_sums;

  // Named scalars for logs: loss/total, loss/dpo|sft|reward, loss/group, loss/balance,
  // rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracy (means), and
  // per preference name "<metric>/<name>", router mass "router/<pref>/group<k>".
  std::map<std::string, double> Named(ObjectiveKind kind,
                                      const std::vector<std::string>& preference_names) const;
};

// Trainable value head of reward modelling: score.weight [1, H] (HF's
// LlamaForSequenceClassification name, no bias). In f32 (f64 for an f64 model) whatever
// the model's dtype: the reward is computed on the host.
struct ValueHead {
  Tensor weight, grad;
};

class PreferenceStep {
 public:
  // adapters: null for full fine-tuning (then full_grads receives every weight gradient
  // and reference is the frozen reference model; it may be null for SFT/REWARD or when
  // reference log-probs are given). value_head: REWARD only.
  PreferenceStep(StepOptions options, LlamaModel* model, PmolAdapters* adapters,
                 LlamaWeights* full_grads, LlamaModel* reference, ValueHead* value_head);

  // Reference log-probs (chosen, rejected) of the batch's pairs, for caching.
  absl::StatusOr<std::pair<std::vector<double>, std::vector<double>>> ReferenceLogProbs(
      const data::PreferenceBatch& batch);

  // Losses, metrics and gradients (+= loss_scale * dL/dtheta). `cached_reference` (may be
  // null) replaces the reference forward. `on_final` (may be empty) hears, during the
  // backward, which layers' gradients are final (LlamaModel::Backward).
  absl::StatusOr<StepMetrics> Run(
      const data::PreferenceBatch& batch, double loss_scale,
      const std::pair<std::vector<double>, std::vector<double>>* cached_reference = nullptr,
      const GradientsFinal& on_final = {});

  // The same metrics with a forward only: no backward, no gradient buffer touched, no
  // activations kept. Switches the adapters to evaluation mode (SetTraining(false): no
  // dropout); a training loop sets training mode again before its next Run, as it does
  // every step anyway (the dropout masks depend on the step).
  absl::StatusOr<StepMetrics> Evaluate(
      const data::PreferenceBatch& batch,
      const std::pair<std::vector<double>, std::vector<double>>* cached_reference = nullptr);

 private:
  // Run (backward = true) and Evaluate (backward = false).
  absl::StatusOr<StepMetrics> Compute(
      const data::PreferenceBatch& batch, double loss_scale,
      const std::pair<std::vector<double>, std::vector<double>>* cached_reference,
      bool backward, const GradientsFinal& on_final);

  StepOptions options_;
  LlamaModel* model_;
  PmolAdapters* adapters_;
  LlamaWeights* full_grads_;
  LlamaModel* reference_;
  ValueHead* value_head_;
};

// Checks a batch against the step (no packing, labels in range, same lengths); errors
// name the pair.
absl::Status CheckBatch(const data::PreferenceBatch& batch, int32_t num_preferences);

}  // namespace pmol

#endif  // PMOL_TRAIN_PREFERENCE_STEP_H_
