// Merging the metrics of successive micro-batches (StepMetrics) exactly into one summary
// (EvalResult), for an evaluation over a data set and for the training loop's logging
// window, so that any micro-batch size gives the figures of one batch holding every pair
// (up to rounding):
//   main     mean over StepMetrics::main_count (pairs; SFT: response tokens), weighted
//   group    weighted by the labelled (response) positions it averages over
//   balance  L_bal recomputed from the per-module slot sums M_i summed over all batches
//            (the squared CV of the whole set's expert usage, mean over groups, modules)
//   total    main + group_loss_weight * group + balance_loss_weight * balance
//   rewards, accuracy, per-pair losses: sums over pairs / pairs
//   router mass (overall and per layer): weighted by the response positions of the split
#ifndef PMOL_TRAIN_METRICS_ACCUMULATOR_H_
#define PMOL_TRAIN_METRICS_ACCUMULATOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "pmol/adapters/expert_layout.h"
#include "pmol/train/preference_step.h"

namespace pmol {

// The figures of one preference's pairs, or of all pairs.
struct EvalSplit {
  int64_t pairs = 0;
  // Means over the split's pairs; NaN when it has none (and, for SFT, always).
  double loss = 0, accuracy = 0, margin = 0, reward_chosen = 0, reward_rejected = 0;
  // PMoL: response positions and the router mass over them, [group (+ empty)], and per
  // adapted layer [j][group (+ empty)] for layer EvalResult::router_layers[j].
  int64_t router_positions = 0;
  std::vector<double> router_mass;
  std::vector<std::vector<double>> router_mass_by_layer;
};

struct EvalResult {
  ObjectiveKind kind = ObjectiveKind::kDpo;
  std::vector<std::string> preference_names;  // one per split of `preferences`
  std::vector<std::string> group_names;       // PMoL: one per expert group; else empty
  std::vector<int64_t> router_layers;         // PMoL: adapted layers, ascending
  int64_t pairs = 0, tokens = 0;
  double loss = 0, main = 0, group = 0, balance = 0;
  std::vector<EvalSplit> preferences;
  EvalSplit overall;

  // The names StepMetrics::Named gives the same figures (loss/total, loss/dpo, ...,
  // rewards/accuracy/<pref>, router/<pref>/group<k>, ...), for the metrics log.
  std::map<std::string, double> Named() const;
};

// names[i], or "<stem><i>" when names has no (non-empty) entry i.
std::string IndexedName(const std::vector<std::string>& names, size_t i, const char* stem);

// Running sums of one split.
struct SplitSums {
  int64_t pairs = 0, router_positions = 0;
  double main = 0, reward_chosen = 0, reward_rejected = 0, correct = 0;
  std::vector<double> mass;                   // [k] sum of mass * positions
  std::vector<std::vector<double>> by_layer;  // [j][k]
};

// Adds StepMetrics of successive micro-batches; Finish() gives the merged figures (names
// are left to the caller). `layout` (PMoL) may be null.
class MetricsAccumulator {
 public:
  MetricsAccumulator(int32_t num_preferences, ObjectiveKind kind, const StepOptions& options,
                     const ExpertLayout* layout);
  void Add(const StepMetrics& m);
  // Adds up the accumulators of every rank of `comm` (a collective): afterwards each
  // rank holds the sums over all ranks' micro-batches, as if it had added them all. A
  // rank that added nothing takes part with zeros.
  void MergeAcross(dist::Comm& comm);
  EvalResult Finish() const;
  int64_t pairs() const { return pairs_; }
  int64_t tokens() const { return tokens_; }

 private:
  ObjectiveKind kind_;
  StepOptions options_;
  const ExpertLayout* layout_;
  std::vector<SplitSums> splits_;
  int64_t pairs_ = 0, tokens_ = 0, main_count_ = 0, group_count_ = 0;
  double main_ = 0, group_ = 0;
  std::vector<std::vector<double>> slot_sums_;
  std::vector<int64_t> router_layers_;
};

}  // namespace pmol

#endif  // PMOL_TRAIN_METRICS_ACCUMULATOR_H_
