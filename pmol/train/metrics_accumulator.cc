// Exact merging of micro-batch metrics; see metrics_accumulator.h.
#include "pmol/train/metrics_accumulator.h"

#include <algorithm>
#include <limits>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "pmol/objectives/router_losses.h"

namespace pmol {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

std::string IndexedName(const std::vector<std::string>& names, size_t i, const char* stem) {
  return i < names.size() && !names[i].empty() ? names[i] : absl::StrCat(stem, i);
}

MetricsAccumulator::MetricsAccumulator(int32_t num_preferences, ObjectiveKind kind,
                                       const StepOptions& options, const ExpertLayout* layout)
    : kind_(kind), options_(options), layout_(layout), splits_(num_preferences + 1) {}

void MetricsAccumulator::Add(const StepMetrics& m) {
  const size_t batch_p = m.pref_pairs.size() - 1;  // this batch's overall index
  const size_t overall = splits_.size() - 1;
  PMOL_CHECK(batch_p <= overall);
  pairs_ += m.pairs;
  tokens_ += m.tokens;
  main_ += m.main * m.main_count;
  main_count_ += m.main_count;
  if (!m.router_positions.empty()) {
    group_ += m.group * m.router_positions[batch_p];
    group_count_ += m.router_positions[batch_p];
    if (slot_sums_.empty()) {
      slot_sums_ = m.router_slot_sums;
      router_layers_ = m.router_layers;
    } else {
      PMOL_CHECK(slot_sums_.size() == m.router_slot_sums.size());
      for (size_t i = 0; i < slot_sums_.size(); ++i)
        for (size_t s = 0; s < slot_sums_[i].size(); ++s)
          slot_sums_[i][s] += m.router_slot_sums[i][s];
    }
  }
  for (size_t p = 0; p <= batch_p; ++p) {
    SplitSums& s = splits_[p == batch_p ? overall : p];
    s.pairs += m.pref_pairs[p];
    s.main += m.main_sum[p];
    s.reward_chosen += m.reward_chosen_sum[p];
    s.reward_rejected += m.reward_rejected_sum[p];
    s.correct += m.correct_sum[p];
    if (m.router_positions.empty()) continue;
    const double n = static_cast<double>(m.router_positions[p]);
    s.router_positions += m.router_positions[p];
    const auto& mass = m.router_mass[p];
    const auto& by_layer = m.router_mass_by_layer[p];
    if (s.mass.empty()) {
      s.mass.assign(mass.size(), 0.0);
      s.by_layer.assign(by_layer.size(), std::vector<double>(mass.size(), 0.0));
    }
    for (size_t k = 0; k < mass.size(); ++k) s.mass[k] += n * mass[k];
    for (size_t j = 0; j < by_layer.size(); ++j)
      for (size_t k = 0; k < mass.size(); ++k) s.by_layer[j][k] += n * by_layer[j][k];
  }
}

void MetricsAccumulator::MergeAcross(dist::Comm& comm) {
  if (comm.size() == 1) return;
  // Shapes first (a rank without router data has empty vectors): the largest of each.
  size_t mass_k = 0, layers = 0;
  for (const SplitSums& s : splits_) {
    mass_k = std::max(mass_k, s.mass.size());
    layers = std::max(layers, s.by_layer.size());
  }
  std::vector<double> shape = {static_cast<double>(slot_sums_.size()),
                               slot_sums_.empty() ? 0.0 : static_cast<double>(slot_sums_[0].size()),
                               static_cast<double>(mass_k), static_cast<double>(layers),
                               static_cast<double>(router_layers_.size())};
  comm.AllReduce(shape.data(), static_cast<int64_t>(shape.size()), DType::kF64, dist::ReduceOp::kMax);
  const size_t modules = static_cast<size_t>(shape[0]), slots = static_cast<size_t>(shape[1]);
  mass_k = static_cast<size_t>(shape[2]);
  layers = static_cast<size_t>(shape[3]);
  if (slot_sums_.empty()) slot_sums_.assign(modules, std::vector<double>(slots, 0.0));
  std::vector<double> ids(static_cast<size_t>(shape[4]), -1.0);
  for (size_t i = 0; i < router_layers_.size(); ++i) ids[i] = static_cast<double>(router_layers_[i]);
  if (!ids.empty()) comm.AllReduce(ids.data(), static_cast<int64_t>(ids.size()), DType::kF64, dist::ReduceOp::kMax);
  router_layers_.assign(ids.begin(), ids.end());
  for (SplitSums& s : splits_) {
    if (s.mass.empty()) s.mass.assign(mass_k, 0.0);
    if (s.by_layer.empty()) s.by_layer.assign(layers, std::vector<double>(mass_k, 0.0));
  }
  // Then every sum, in one all-reduce (counts travel as doubles: exact below 2^53).
  std::vector<double> v;
  auto visit = [&](bool pack) {
    size_t at = 0;
    auto one = [&](auto& x) {
      if (pack) {
        v.push_back(static_cast<double>(x));
      } else {
        x = static_cast<std::remove_reference_t<decltype(x)>>(v[at++]);
      }
    };
    one(pairs_), one(tokens_), one(main_count_), one(group_count_), one(main_), one(group_);
    for (auto& row : slot_sums_)
      for (double& x : row) one(x);
    for (SplitSums& s : splits_) {
      one(s.pairs), one(s.router_positions), one(s.main), one(s.reward_chosen), one(s.reward_rejected);
      one(s.correct);
      for (double& x : s.mass) one(x);
      for (auto& row : s.by_layer)
        for (double& x : row) one(x);
    }
  };
  visit(true);
  comm.AllReduceSum(v);
  visit(false);
}

EvalResult MetricsAccumulator::Finish() const {
  EvalResult r;
  r.kind = kind_;
  r.pairs = pairs_;
  r.tokens = tokens_;
  r.main = main_count_ > 0 ? main_ / main_count_ : 0.0;
  r.group = group_count_ > 0 ? group_ / group_count_ : 0.0;
  if (!slot_sums_.empty()) {
    // L_bal of the whole set, from the merged sums M_i.
    for (const std::vector<double>& sums : slot_sums_) {
      r.balance += BalanceLossOfSlotSums(*layout_, sums) / slot_sums_.size();
    }
    r.router_layers = router_layers_;
  }
  r.loss =
      r.main + options_.group_loss_weight * r.group + options_.balance_loss_weight * r.balance;
  for (size_t p = 0; p < splits_.size(); ++p) {
    const SplitSums& s = splits_[p];
    EvalSplit e;
    e.pairs = s.pairs;
    const bool rewards = kind_ != ObjectiveKind::kSft && s.pairs > 0;
    const double n = static_cast<double>(s.pairs);
    e.loss = rewards ? s.main / n : kNaN;
    e.accuracy = rewards ? s.correct / n : kNaN;
    e.margin = rewards ? (s.reward_chosen - s.reward_rejected) / n : kNaN;
    e.reward_chosen = rewards ? s.reward_chosen / n : kNaN;
    e.reward_rejected = rewards ? s.reward_rejected / n : kNaN;
    e.router_positions = s.router_positions;
    const double positions = static_cast<double>(s.router_positions);
    for (double v : s.mass) e.router_mass.push_back(positions > 0 ? v / positions : 0.0);
    for (const std::vector<double>& layer : s.by_layer) {
      e.router_mass_by_layer.emplace_back();
      for (double v : layer)
        e.router_mass_by_layer.back().push_back(positions > 0 ? v / positions : 0.0);
    }
    if (p + 1 == splits_.size()) {
      r.overall = std::move(e);
    } else {
      r.preferences.push_back(std::move(e));
    }
  }
  return r;
}

std::map<std::string, double> EvalResult::Named() const {
  std::map<std::string, double> out;
  out["loss/total"] = loss;
  out[kind == ObjectiveKind::kDpo   ? "loss/dpo"
      : kind == ObjectiveKind::kSft ? "loss/sft"
                                    : "loss/reward"] = main;
  out["loss/group"] = group;
  out["loss/balance"] = balance;
  for (size_t p = 0; p <= preferences.size(); ++p) {
    const bool all = p == preferences.size();
    const EvalSplit& s = all ? overall : preferences[p];
    if (s.pairs == 0) continue;
    const std::string suffix =
        all ? std::string() : absl::StrCat("/", IndexedName(preference_names, p, "pref"));
    if (kind != ObjectiveKind::kSft) {
      out["rewards/chosen" + suffix] = s.reward_chosen;
      out["rewards/rejected" + suffix] = s.reward_rejected;
      out["rewards/margins" + suffix] = s.margin;
      out["rewards/accuracy" + suffix] = s.accuracy;
    }
    for (size_t k = 0; k < s.router_mass.size(); ++k) {
      const bool empty = k + 1 == s.router_mass.size();
      out[absl::StrCat("router", suffix, empty ? "/empty" : absl::StrCat("/group", k))] =
          s.router_mass[k];
    }
  }
  return out;
}

}  // namespace pmol
