// Validation of RunConfig (see run_config_validation.h).
#include "proto/run_config_validation.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pmol::config {
namespace {

#define PMOL_CONFIG_RETURN_IF_ERROR(expr)   \
  do {                                      \
    absl::Status status_ = (expr);          \
    if (!status_.ok()) return status_;      \
  } while (false)

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

std::string At(const std::string& path, int i) { return absl::StrCat(path, "[", i, "]"); }

std::string Quote(const std::string& s) { return absl::StrCat("\"", s, "\""); }

// Integer bounds.
absl::Status AtLeast(const std::string& path, int64_t v, int64_t lo) {
  if (v < lo) return Bad(path, absl::StrCat("must be >= ", lo, ", got ", v));
  return absl::OkStatus();
}

// Real numbers: finite, and within [lo or (lo, hi] or hi) as the flags say.
struct Range {
  double lo = -INFINITY;
  bool lo_open = false;
  double hi = INFINITY;
  bool hi_open = false;
};

absl::Status InRange(const std::string& path, double v, Range r) {
  const bool ok = std::isfinite(v) && (r.lo_open ? v > r.lo : v >= r.lo) &&
                  (r.hi_open ? v < r.hi : v <= r.hi);
  if (ok) return absl::OkStatus();
  std::string want;
  if (std::isfinite(r.lo) && std::isfinite(r.hi)) {
    want = absl::StrCat("must be in ", r.lo_open ? "(" : "[", r.lo, ", ", r.hi,
                        r.hi_open ? ")" : "]");
  } else if (std::isfinite(r.lo)) {
    want = absl::StrCat("must be ", r.lo_open ? "> " : ">= ", r.lo);
  } else {
    want = absl::StrCat("must be ", r.hi_open ? "< " : "<= ", r.hi);
  }
  if (!std::isfinite(v)) want = "must be finite and " + want.substr(8);
  return Bad(path, absl::StrCat(want, ", got ", v));
}

Range Positive() { return {.lo = 0, .lo_open = true}; }
Range NonNegative() { return {.lo = 0}; }
Range ClosedOpen(double lo, double hi) { return {.lo = lo, .hi = hi, .hi_open = true}; }
Range Closed(double lo, double hi) { return {.lo = lo, .hi = hi}; }

absl::Status OneOf(const std::string& path, const std::string& v,
                   const std::vector<std::string>& allowed) {
  for (const std::string& a : allowed) {
    if (v == a) return absl::OkStatus();
  }
  return Bad(path, absl::StrCat("unknown value ", Quote(v), "; expected one of ",
                                absl::StrJoin(allowed, ", ")));
}

absl::Status ValidateModel(const ModelConfig& m) {
  PMOL_CONFIG_RETURN_IF_ERROR(OneOf("model.dtype", m.dtype(), {"f32", "f64", "bf16", "f16"}));
  PMOL_CONFIG_RETURN_IF_ERROR(OneOf("model.device", m.device(), {"cpu", "cuda"}));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("model.threads", m.threads(), 0));
  return absl::OkStatus();
}

// The number of preference groups of a PMoL adapter (groups when listed, else num_groups).
int64_t GroupCount(const AdapterConfig& a) {
  return a.groups_size() > 0 ? a.groups_size() : a.num_groups();
}

absl::Status ValidatePmolGroups(const AdapterConfig& a, const DataConfig& d) {
  if (a.groups_size() == 0) {
    if (a.num_groups() < 1) {
      return Bad("adapter.num_groups",
                 absl::StrCat("PMoL needs at least one preference group, got ", a.num_groups()));
    }
    PMOL_CONFIG_RETURN_IF_ERROR(
        AtLeast("adapter.experts_per_group", a.experts_per_group(), 1));
  } else if (a.has_num_groups() && a.num_groups() != a.groups_size()) {
    return Bad("adapter.num_groups",
               absl::StrCat("is ", a.num_groups(), " but adapter.groups lists ", a.groups_size(),
                            " groups (set one of them)"));
  }
  std::map<std::string, int> group_names;
  for (int i = 0; i < a.groups_size(); ++i) {
    const ExpertGroup& g = a.groups(i);
    const std::string path = At("adapter.groups", i);
    PMOL_CONFIG_RETURN_IF_ERROR(AtLeast(path + ".experts", g.experts(), 1));
    if (!g.name().empty()) {
      auto [it, inserted] = group_names.emplace(g.name(), i);
      if (!inserted) {
        return Bad(path + ".name", absl::StrCat("duplicate group name ", Quote(g.name()),
                                                " (also adapter.groups[", it->second, "])"));
      }
    }
  }
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("adapter.empty_experts", a.empty_experts(), 0));

  int64_t experts = 0;
  if (a.groups_size() > 0) {
    for (const ExpertGroup& g : a.groups()) experts += g.experts();
  } else {
    experts = int64_t{a.num_groups()} * a.experts_per_group();
  }
  const int64_t slots = experts + a.empty_experts();
  if (a.top_k() < 0) {
    return Bad("adapter.top_k", absl::StrCat("must be >= 0 (0: dense router), got ", a.top_k()));
  }
  if (a.top_k() > slots) {
    return Bad("adapter.top_k",
               absl::StrCat("must be <= the number of router slots ", slots, " (", experts,
                            " experts + ", a.empty_experts(), " empty), got ", a.top_k()));
  }
  if (!(a.capacity_factor() >= 0) || !std::isfinite(a.capacity_factor())) {
    return Bad("adapter.capacity_factor",
               absl::StrCat("must be >= 0 (0: dropless), got ", a.capacity_factor()));
  }
  if (a.kind() == AdapterConfig::PMOL && a.capacity_factor() > 0 && (a.top_k() == 0 || a.top_k() == slots)) {
    return Bad("adapter.capacity_factor",
               "needs top_k routing (adapter.top_k between 1 and the slot count - 1): a dense "
               "router sends every row to every expert; set capacity_factor: 0");
  }

  // Agreement with the data's preference names.
  const int names = d.preference_names_size();
  if (names > 0) {
    const int64_t groups = GroupCount(a);
    if (groups != names) {
      const std::string group_field =
          a.groups_size() > 0 ? "adapter.groups" : "adapter.num_groups";
      return Bad(group_field,
                 absl::StrCat(groups, " preference groups but data.preference_names has ", names,
                              " names; PMoL needs one group per preference"));
    }
    for (int i = 0; i < a.groups_size(); ++i) {
      const std::string& gname = a.groups(i).name();
      if (!gname.empty() && gname != d.preference_names(i)) {
        return Bad(At("adapter.groups", i) + ".name",
                   absl::StrCat(Quote(gname), " does not match data.preference_names[", i, "] ",
                                Quote(d.preference_names(i)),
                                " (groups follow the preference names in order)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAdapter(const AdapterConfig& a, const DataConfig& d) {
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("adapter.rank", a.rank(), 1));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("adapter.alpha", a.alpha(), Positive()));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("adapter.dropout", a.dropout(), ClosedOpen(0, 1)));
  std::map<int, int> seen_module;  // module -> first index
  for (int i = 0; i < a.target_modules_size(); ++i) {
    const std::string path = At("adapter.target_modules", i);
    absl::StatusOr<int> m = ParseTargetModule(a.target_modules(i));
    if (!m.ok()) return Bad(path, std::string(m.status().message()));
    auto [it, inserted] = seen_module.emplace(*m, i);
    if (!inserted) {
      return Bad(path, absl::StrCat("module ", Quote(a.target_modules(i)), " is listed twice (",
                                    Quote(a.target_modules(it->second)),
                                    " at adapter.target_modules[", it->second, "])"));
    }
  }
  std::map<int, int> seen_layer;
  for (int i = 0; i < a.layers_size(); ++i) {
    const std::string path = At("adapter.layers", i);
    PMOL_CONFIG_RETURN_IF_ERROR(AtLeast(path, a.layers(i), 0));
    auto [it, inserted] = seen_layer.emplace(a.layers(i), i);
    if (!inserted) {
      return Bad(path, absl::StrCat("layer ", a.layers(i), " is listed twice (also adapter.layers[",
                                    it->second, "])"));
    }
  }
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("adapter.router_temperature", a.router_temperature(), Positive()));
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("adapter.router_init_std", a.router_init_std(), NonNegative()));
  // LORA and FULL have no groups and no router slots: those fields are ignored.
  if (a.kind() == AdapterConfig::PMOL) PMOL_CONFIG_RETURN_IF_ERROR(ValidatePmolGroups(a, d));
  return absl::OkStatus();
}

absl::Status ValidateObjective(const ObjectiveConfig& o) {
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("objective.beta", o.beta(), Positive()));
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("objective.label_smoothing", o.label_smoothing(), ClosedOpen(0, 0.5)));
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("objective.group_loss_weight", o.group_loss_weight(), NonNegative()));
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("objective.group_label_smoothing", o.group_label_smoothing(), ClosedOpen(0, 1)));
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("objective.balance_loss_weight", o.balance_loss_weight(), NonNegative()));
  return absl::OkStatus();
}

absl::Status ValidateOptimizer(const OptimizerConfig& o) {
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.lr", o.lr(), NonNegative()));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.beta1", o.beta1(), ClosedOpen(0, 1)));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.beta2", o.beta2(), ClosedOpen(0, 1)));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.eps", o.eps(), Positive()));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.weight_decay", o.weight_decay(), NonNegative()));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("optimizer.warmup_steps", o.warmup_steps(), 0));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.min_lr_ratio", o.min_lr_ratio(), Closed(0, 1)));
  PMOL_CONFIG_RETURN_IF_ERROR(
      InRange("optimizer.max_grad_norm", o.max_grad_norm(), NonNegative()));
  PMOL_CONFIG_RETURN_IF_ERROR(
      AtLeast("optimizer.grad_accumulation_steps", o.grad_accumulation_steps(), 1));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("optimizer.max_steps", o.max_steps(), 0));
  PMOL_CONFIG_RETURN_IF_ERROR(InRange("optimizer.epochs", o.epochs(), Positive()));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("optimizer.max_skipped_steps", o.max_skipped_steps(), 0));
  return absl::OkStatus();
}

absl::Status ValidateSources(const std::string& field,
                             const google::protobuf::RepeatedPtrField<DataSource>& sources,
                             const std::set<std::string>& names) {
  for (int i = 0; i < sources.size(); ++i) {
    const DataSource& s = sources.Get(i);
    const std::string path = At("data." + field, i);
    PMOL_CONFIG_RETURN_IF_ERROR(
        OneOf(path + ".format", s.format(), {"auto", "fields", "hh_rlhf", "messages"}));
    PMOL_CONFIG_RETURN_IF_ERROR(InRange(path + ".mix_weight", s.mix_weight(), Positive()));
    if (!s.preference().empty() && !names.empty() && names.count(s.preference()) == 0) {
      return Bad(path + ".preference",
                 absl::StrCat(Quote(s.preference()), " is not one of data.preference_names"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateData(const DataConfig& d) {
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("data.micro_batch_size", d.micro_batch_size(), 1));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("data.global_batch_size", d.global_batch_size(), 0));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("data.max_length", d.max_length(), 2));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("data.max_prompt_length", d.max_prompt_length(), 0));
  if (d.max_prompt_length() >= d.max_length()) {
    return Bad("data.max_prompt_length",
               absl::StrCat("must be < data.max_length ", d.max_length(),
                            " (room for a response), got ", d.max_prompt_length()));
  }
  PMOL_CONFIG_RETURN_IF_ERROR(
      OneOf("data.prompt_truncation", d.prompt_truncation(), {"keep_end", "keep_start"}));
  PMOL_CONFIG_RETURN_IF_ERROR(OneOf("data.on_bad_input", d.on_bad_input(), {"skip", "fail"}));
  PMOL_CONFIG_RETURN_IF_ERROR(
      OneOf("data.chat_template", d.chat_template(), {"chatml", "llama2", "llama3", "plain"}));
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"data.prompt_field", &d.prompt_field()},
        {"data.chosen_field", &d.chosen_field()},
        {"data.rejected_field", &d.rejected_field()},
        {"data.preference_field", &d.preference_field()}}) {
    if (value->empty()) return Bad(field, "must not be empty");
  }
  std::map<std::string, int> names;
  for (int i = 0; i < d.preference_names_size(); ++i) {
    const std::string& n = d.preference_names(i);
    const std::string path = At("data.preference_names", i);
    if (n.empty()) return Bad(path, "must not be empty");
    auto [it, inserted] = names.emplace(n, i);
    if (!inserted) {
      return Bad(path, absl::StrCat("duplicate name ", Quote(n), " (also data.preference_names[",
                                    it->second, "])"));
    }
  }
  std::set<std::string> name_set;
  for (const auto& [n, i] : names) name_set.insert(n);
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateSources("train", d.train(), name_set));
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateSources("eval", d.eval(), name_set));
  return absl::OkStatus();
}

absl::Status ValidateParallel(const ParallelConfig& p) {
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("parallel.dp", p.dp(), 0));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("parallel.ep", p.ep(), 1));
  if (p.zero_stage() < 0 || p.zero_stage() > 2) {
    return Bad("parallel.zero_stage", absl::StrCat("must be 0, 1 or 2, got ", p.zero_stage()));
  }
  if (!(p.bucket_mb() > 0) || !std::isfinite(p.bucket_mb())) {
    return Bad("parallel.bucket_mb", absl::StrCat("must be a size in MiB > 0, got ", p.bucket_mb()));
  }
  if (!(p.collective_timeout_s() > 0)) {
    return Bad("parallel.collective_timeout_s", absl::StrCat("must be > 0, got ", p.collective_timeout_s()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> ParseTargetModule(const std::string& name) {
  for (int i = 0; i < kNumTargetModules; ++i) {
    const std::string short_name = kTargetModuleNames[i];
    if (name == short_name || name == short_name + "_proj") return i;
  }
  std::vector<std::string> long_names;
  for (const char* n : kTargetModuleNames) long_names.push_back(std::string(n) + "_proj");
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown module ", Quote(name), "; expected one of ",
      absl::StrJoin(kTargetModuleNames, kTargetModuleNames + kNumTargetModules, ", "), " or ",
      absl::StrJoin(long_names, ", ")));
}

absl::Status ValidateRunConfig(const RunConfig& c) {
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateModel(c.model()));
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateAdapter(c.adapter(), c.data()));
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateObjective(c.objective()));
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateOptimizer(c.optimizer()));
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateData(c.data()));
  PMOL_CONFIG_RETURN_IF_ERROR(ValidateParallel(c.parallel()));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("checkpoint.every_steps", c.checkpoint().every_steps(), 0));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("checkpoint.keep_last", c.checkpoint().keep_last(), 1));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("logging.every_steps", c.logging().every_steps(), 1));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("eval.every_steps", c.eval().every_steps(), 0));
  PMOL_CONFIG_RETURN_IF_ERROR(AtLeast("eval.max_pairs", c.eval().max_pairs(), 0));
  return absl::OkStatus();
}

#undef PMOL_CONFIG_RETURN_IF_ERROR

}  // namespace pmol::config
