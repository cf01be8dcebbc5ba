// Dataset evaluation, exact merging of micro-batch metrics and eval.json; see evaluator.h.
#include "pmol/train/evaluator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/data/batching.h"
#include "pmol/io/atomic_file.h"

namespace pmol {
namespace {

constexpr char kFormat[] = "pmol-eval-v1";
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string PairName(const data::PreferenceDataset& set, int64_t i) {
  const data::TokenizedPair& p = set.pairs[i];
  return absl::StrCat("eval pair ", i, " (source ", p.source, ", line ", p.line, ")");
}

// The pairs to evaluate, checked against seq_len and the expert groups. Sets *num_prefs
// to the number of preference splits.
absl::StatusOr<int64_t> CheckEvalSet(const RunComponents& c, const data::PreferenceDataset& set,
                                     int32_t micro_batch_size, int32_t seq_len, int64_t max_pairs,
                                     int32_t* num_prefs) {
  if (micro_batch_size <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("eval micro_batch_size: ", micro_batch_size, " must be positive"));
  if (seq_len <= 0)
    return absl::InvalidArgumentError(absl::StrCat("eval seq_len: ", seq_len, " must be positive"));
  if (max_pairs < 0)
    return absl::InvalidArgumentError(absl::StrCat("eval max_pairs: ", max_pairs, " is negative"));
  const int64_t size = static_cast<int64_t>(set.pairs.size());
  const int64_t count = max_pairs > 0 ? std::min(max_pairs, size) : size;
  if (count == 0) return absl::InvalidArgumentError("eval set: no pairs to evaluate");
  const bool grouped = c.adapters != nullptr && c.adapters->options().has_router();
  int32_t prefs = std::max(1, c.num_preferences);
  for (int64_t i = 0; i < count; ++i) {
    const data::TokenizedPair& p = set.pairs[i];
    const size_t longest = p.prompt.size() + std::max(p.chosen.size(), p.rejected.size());
    if (longest > static_cast<size_t>(seq_len))
      return absl::InvalidArgumentError(
          absl::StrCat(PairName(set, i), ": ", longest, " tokens do not fit seq_len ", seq_len));
    if (p.preference < 0 || (grouped && p.preference >= c.num_preferences))
      return absl::InvalidArgumentError(
          absl::StrCat(PairName(set, i), ": preference ", p.preference, " is outside [0, ",
                       c.num_preferences, ") (one label per expert group)"));
    prefs = std::max(prefs, p.preference + 1);
  }
  *num_prefs = prefs;
  return count;
}

std::vector<int64_t> BatchIndices(int64_t first, int64_t count, int32_t micro_batch_size) {
  std::vector<int64_t> indices;
  for (int64_t i = first; i < std::min(count, first + micro_batch_size); ++i) indices.push_back(i);
  return indices;
}

std::string Prefixed(const std::vector<int64_t>& indices) {
  return absl::StrCat("eval pairs [", indices.front(), ", ", indices.back() + 1, "): ");
}

// --- JSON ---

nlohmann::json Number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

nlohmann::json SplitToJson(const EvalSplit& s) {
  return {{"pairs", s.pairs},
          {"loss", Number(s.loss)},
          {"accuracy", Number(s.accuracy)},
          {"margin", Number(s.margin)},
          {"reward_chosen", Number(s.reward_chosen)},
          {"reward_rejected", Number(s.reward_rejected)},
          {"router_positions", s.router_positions},
          {"router_mass", s.router_mass},
          {"router_mass_by_layer", s.router_mass_by_layer}};
}

const char* KindName(ObjectiveKind kind) {
  return kind == ObjectiveKind::kDpo ? "dpo" : kind == ObjectiveKind::kSft ? "sft" : "reward";
}

// Field readers: errors name `where` and the field path.
class JsonReader {
 public:
  explicit JsonReader(std::string where) : where_(std::move(where)) {}

  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, ": ", field, ": ", what));
  }
  absl::StatusOr<const nlohmann::json*> Get(const nlohmann::json& obj, const std::string& key,
                                            const std::string& path) const {
    if (!obj.is_object() || !obj.contains(key)) return Error(path + key, "missing");
    return &obj[key];
  }
  // A number, or null for NaN.
  absl::StatusOr<double> Double(const nlohmann::json& obj, const std::string& key,
                                const std::string& path) const {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* v, Get(obj, key, path));
    return ToDouble(*v, path + key);
  }
  absl::StatusOr<double> ToDouble(const nlohmann::json& v, const std::string& field) const {
    if (v.is_null()) return kNaN;
    if (!v.is_number()) return Error(field, "expected a number");
    return v.get<double>();
  }
  absl::StatusOr<int64_t> Count(const nlohmann::json& obj, const std::string& key,
                                const std::string& path) const {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* v, Get(obj, key, path));
    if (!v->is_number_integer() || v->get<int64_t>() < 0)
      return Error(path + key, "expected a non-negative integer");
    return v->get<int64_t>();
  }
  absl::StatusOr<std::vector<double>> Doubles(const nlohmann::json& v, const std::string& field,
                                              size_t size) const {
    if (!v.is_array()) return Error(field, "expected a list of numbers");
    if (v.size() != size)
      return Error(field, absl::StrCat("has ", v.size(), " entries, expected ", size));
    std::vector<double> out;
    for (size_t i = 0; i < v.size(); ++i) {
      PMOL_ASSIGN_OR_RETURN(double d, ToDouble(v[i], absl::StrCat(field, "[", i, "]")));
      out.push_back(d);
    }
    return out;
  }
  absl::StatusOr<std::vector<std::string>> Strings(const nlohmann::json& obj,
                                                   const std::string& key) const {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* v, Get(obj, key, ""));
    if (!v->is_array()) return Error(key, "expected a list of names");
    std::vector<std::string> out;
    for (size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) return Error(absl::StrCat(key, "[", i, "]"), "expected a string");
      out.push_back((*v)[i].get<std::string>());
    }
    return out;
  }

  absl::StatusOr<EvalSplit> Split(const nlohmann::json& obj, const std::string& path, size_t slots,
                                  size_t layers) const {
    if (!obj.is_object()) return Error(path, "expected an object");
    const std::string p = path + ".";
    EvalSplit s;
    PMOL_ASSIGN_OR_RETURN(s.pairs, Count(obj, "pairs", p));
    PMOL_ASSIGN_OR_RETURN(s.loss, Double(obj, "loss", p));
    PMOL_ASSIGN_OR_RETURN(s.accuracy, Double(obj, "accuracy", p));
    PMOL_ASSIGN_OR_RETURN(s.margin, Double(obj, "margin", p));
    PMOL_ASSIGN_OR_RETURN(s.reward_chosen, Double(obj, "reward_chosen", p));
    PMOL_ASSIGN_OR_RETURN(s.reward_rejected, Double(obj, "reward_rejected", p));
    PMOL_ASSIGN_OR_RETURN(s.router_positions, Count(obj, "router_positions", p));
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* mass, Get(obj, "router_mass", p));
    PMOL_ASSIGN_OR_RETURN(s.router_mass, Doubles(*mass, p + "router_mass", slots));
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* by_layer, Get(obj, "router_mass_by_layer", p));
    const std::string field = p + "router_mass_by_layer";
    if (!by_layer->is_array() || by_layer->size() != (slots == 0 ? 0 : layers))
      return Error(field, absl::StrCat("expected a list of ", slots == 0 ? 0 : layers,
                                       " lists (one per router layer)"));
    for (size_t j = 0; j < by_layer->size(); ++j) {
      PMOL_ASSIGN_OR_RETURN(std::vector<double> row,
                            Doubles((*by_layer)[j], absl::StrCat(field, "[", j, "]"), slots));
      s.router_mass_by_layer.push_back(std::move(row));
    }
    return s;
  }

 private:
  std::string where_;
};

}  // namespace

absl::StatusOr<EvalResult> EvaluateDataset(RunComponents& c, const data::PreferenceDataset& set,
                                           int32_t micro_batch_size, int32_t seq_len,
                                           int32_t pad_id, int64_t max_pairs,
                                           const EvalReference* reference, dist::Comm* comm) {
  int32_t prefs = 1;
  PMOL_ASSIGN_OR_RETURN(const int64_t count,
                        CheckEvalSet(c, set, micro_batch_size, seq_len, max_pairs, &prefs));
  if (reference != nullptr && (static_cast<int64_t>(reference->chosen.size()) < count ||
                               static_cast<int64_t>(reference->rejected.size()) < count))
    return absl::InvalidArgumentError(absl::StrCat("eval reference: has log-probs for ",
                                                   reference->chosen.size(), " pairs, ", count,
                                                   " are evaluated"));
  const StepOptions options = StepOptionsFromConfig(c.config.objective(), c.num_preferences);
  const bool grouped = c.adapters != nullptr && c.adapters->options().has_router();
  MetricsAccumulator acc(prefs, options.kind, options,
                         grouped ? &c.adapters->options().layout : nullptr);
  const int64_t rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  // With expert parallelism every forward is a collective of the expert-parallel group,
  // so every rank takes the same number of batches: a rank past the end evaluates the
  // first batch again and drops its metrics.
  const bool lockstep = c.adapters != nullptr && c.adapters->expert_parallel();
  const int64_t stride = ranks * micro_batch_size;
  const int64_t rounds = (count + stride - 1) / stride;
  absl::Status failure = absl::OkStatus();
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t first = round * stride + rank * micro_batch_size;
    if (first >= count && !lockstep) break;
    const bool counted = first < count;
    const std::vector<int64_t> indices = BatchIndices(counted ? first : 0, count, micro_batch_size);
    const data::PreferenceBatch batch =
        data::MakePaddedBatch(set, indices, micro_batch_size, seq_len, pad_id);
    std::pair<std::vector<double>, std::vector<double>> cached;
    if (reference != nullptr) {
      for (int64_t i : indices) {
        cached.first.push_back(reference->chosen[i]);
        cached.second.push_back(reference->rejected[i]);
      }
    }
    absl::StatusOr<StepMetrics> m = c.step->Evaluate(batch, reference ? &cached : nullptr);
    if (!m.ok()) {
      failure = absl::Status(m.status().code(), Prefixed(indices) + std::string(m.status().message()));
      break;
    }
    if (counted) acc.Add(*m);
  }
  if (comm != nullptr) {
    PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*comm, failure));  // a rank's error stops every rank
    acc.MergeAcross(*comm);
  }
  PMOL_RETURN_IF_ERROR(failure);
  EvalResult r = acc.Finish();
  for (int32_t p = 0; p < prefs; ++p)
    r.preference_names.push_back(IndexedName(c.preference_names, p, "pref"));
  if (grouped) {
    const AdapterOptions& a = c.adapters->options();
    for (int32_t k = 0; k < a.layout.num_groups(); ++k)
      r.group_names.push_back(IndexedName(a.group_names, k, "group"));
  }
  return r;
}

absl::StatusOr<EvalReference> ComputeEvalReference(RunComponents& c,
                                                   const data::PreferenceDataset& set,
                                                   int32_t micro_batch_size, int32_t seq_len,
                                                   int32_t pad_id, int64_t max_pairs,
                                                   dist::Comm* comm) {
  int32_t prefs = 1;
  PMOL_ASSIGN_OR_RETURN(const int64_t count,
                        CheckEvalSet(c, set, micro_batch_size, seq_len, max_pairs, &prefs));
  // Full fine-tuning without a frozen copy (precompute_reference): the model's current
  // weights are the reference, so this must run before the first update.
  std::unique_ptr<PreferenceStep> own;
  PreferenceStep* step = c.step.get();
  if (c.adapters == nullptr && c.reference == nullptr) {
    own = std::make_unique<PreferenceStep>(
        StepOptionsFromConfig(c.config.objective(), c.num_preferences), c.model.get(),
        /*adapters=*/nullptr, /*full_grads=*/nullptr, /*reference=*/c.model.get(),
        /*value_head=*/nullptr);
    step = own.get();
  }
  EvalReference ref;
  ref.chosen.assign(count, 0.0);
  ref.rejected.assign(count, 0.0);
  const int64_t rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  // The reference runs without adapters: no collective inside, ranks need no lockstep.
  absl::Status failure = absl::OkStatus();
  for (int64_t first = rank * micro_batch_size; first < count; first += ranks * micro_batch_size) {
    const std::vector<int64_t> indices = BatchIndices(first, count, micro_batch_size);
    const data::PreferenceBatch batch =
        data::MakePaddedBatch(set, indices, micro_batch_size, seq_len, pad_id);
    auto lp = step->ReferenceLogProbs(batch);
    if (!lp.ok()) {
      failure = absl::Status(lp.status().code(), Prefixed(indices) + std::string(lp.status().message()));
      break;
    }
    for (size_t i = 0; i < indices.size(); ++i) {
      ref.chosen[indices[i]] = lp->first[i];
      ref.rejected[indices[i]] = lp->second[i];
    }
  }
  if (comm != nullptr) PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*comm, failure));
  PMOL_RETURN_IF_ERROR(failure);
  if (comm != nullptr && comm->size() > 1) {  // each value comes from one rank, zeros elsewhere
    comm->AllReduceSum(ref.chosen);
    comm->AllReduceSum(ref.rejected);
  }
  return ref;
}

std::string EvalResultToJson(const EvalResult& r) {
  nlohmann::json per_preference = nlohmann::json::array();
  for (const EvalSplit& s : r.preferences) per_preference.push_back(SplitToJson(s));
  nlohmann::json j = {{"format", kFormat},
                      {"objective", KindName(r.kind)},
                      {"pairs", r.pairs},
                      {"tokens", r.tokens},
                      {"loss",
                       {{"total", Number(r.loss)},
                        {"main", Number(r.main)},
                        {"group", Number(r.group)},
                        {"balance", Number(r.balance)}}},
                      {"preferences", r.preference_names},
                      {"groups", r.group_names},
                      {"router_layers", r.router_layers},
                      {"per_preference", per_preference},
                      {"overall", SplitToJson(r.overall)}};
  return j.dump(1) + "\n";
}

absl::StatusOr<EvalResult> EvalResultFromJson(const std::string& text, const std::string& where) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(where, ": not valid JSON"));
  if (!j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected a JSON object"));
  const JsonReader in(where);
  EvalResult r;
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* format, in.Get(j, "format", ""));
  if (*format != kFormat) return in.Error("format", absl::StrCat("expected \"", kFormat, "\""));
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* kind, in.Get(j, "objective", ""));
  if (*kind == "dpo") {
    r.kind = ObjectiveKind::kDpo;
  } else if (*kind == "sft") {
    r.kind = ObjectiveKind::kSft;
  } else if (*kind == "reward") {
    r.kind = ObjectiveKind::kReward;
  } else {
    return in.Error("objective", "expected \"dpo\", \"sft\" or \"reward\"");
  }
  PMOL_ASSIGN_OR_RETURN(r.pairs, in.Count(j, "pairs", ""));
  PMOL_ASSIGN_OR_RETURN(r.tokens, in.Count(j, "tokens", ""));
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* loss, in.Get(j, "loss", ""));
  PMOL_ASSIGN_OR_RETURN(r.loss, in.Double(*loss, "total", "loss."));
  PMOL_ASSIGN_OR_RETURN(r.main, in.Double(*loss, "main", "loss."));
  PMOL_ASSIGN_OR_RETURN(r.group, in.Double(*loss, "group", "loss."));
  PMOL_ASSIGN_OR_RETURN(r.balance, in.Double(*loss, "balance", "loss."));
  PMOL_ASSIGN_OR_RETURN(r.preference_names, in.Strings(j, "preferences"));
  PMOL_ASSIGN_OR_RETURN(r.group_names, in.Strings(j, "groups"));
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* layers, in.Get(j, "router_layers", ""));
  if (!layers->is_array()) return in.Error("router_layers", "expected a list of layer indices");
  for (size_t i = 0; i < layers->size(); ++i) {
    if (!(*layers)[i].is_number_integer() || (*layers)[i].get<int64_t>() < 0)
      return in.Error(absl::StrCat("router_layers[", i, "]"), "expected a layer index");
    r.router_layers.push_back((*layers)[i].get<int64_t>());
  }
  const size_t slots = r.group_names.empty() ? 0 : r.group_names.size() + 1;
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* per, in.Get(j, "per_preference", ""));
  if (!per->is_array() || per->size() != r.preference_names.size())
    return in.Error("per_preference", absl::StrCat("expected a list of ", r.preference_names.size(),
                                                   " entries (one per name in preferences)"));
  for (size_t p = 0; p < per->size(); ++p) {
    PMOL_ASSIGN_OR_RETURN(EvalSplit s, in.Split((*per)[p], absl::StrCat("per_preference[", p, "]"),
                                                slots, r.router_layers.size()));
    r.preferences.push_back(std::move(s));
  }
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* overall, in.Get(j, "overall", ""));
  PMOL_ASSIGN_OR_RETURN(r.overall, in.Split(*overall, "overall", slots, r.router_layers.size()));
  return r;
}

absl::Status WriteEvalResult(const std::string& path, const EvalResult& result) {
  const std::string json = EvalResultToJson(result);
  return WriteFileAtomically(path, {json});
}

absl::StatusOr<EvalResult> ReadEvalResult(const std::string& path) {
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return EvalResultFromJson(text, path);
}

}  // namespace pmol
