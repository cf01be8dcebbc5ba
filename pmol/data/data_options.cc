// Validation of DataOptions (see data_options.h).
#include "pmol/data/data_options.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "pmol/data/chat_template.h"

namespace pmol::data {
namespace {

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("data.", field, ": ", what));
}

}  // namespace

absl::Status ParseDataFormat(const std::string& name, DataFormat* format) {
  if (name == "auto") {
    *format = DataFormat::kAuto;
  } else if (name == "fields") {
    *format = DataFormat::kFields;
  } else if (name == "hh_rlhf") {
    *format = DataFormat::kHhRlhf;
  } else if (name == "messages") {
    *format = DataFormat::kMessages;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown data format '", name, "' (auto, fields, hh_rlhf, messages)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateDataOptions(const DataOptions& o) {
  if (o.preference_names.empty()) return Bad("preference_names", "must name at least one preference");
  std::set<std::string> names;
  for (size_t i = 0; i < o.preference_names.size(); ++i) {
    const std::string& n = o.preference_names[i];
    if (n.empty()) return Bad(absl::StrCat("preference_names[", i, "]"), "must not be empty");
    if (!names.insert(n).second) {
      return Bad(absl::StrCat("preference_names[", i, "]"), "duplicate name '" + n + "'");
    }
  }
  if (o.sources.empty()) return Bad("sources", "must list at least one file");
  double total_weight = 0.0;
  for (size_t i = 0; i < o.sources.size(); ++i) {
    const DataSourceOptions& s = o.sources[i];
    const std::string at = absl::StrCat("sources[", i, "]");
    if (s.path.empty()) return Bad(at + ".path", "must not be empty");
    if (!s.preference.empty() && names.count(s.preference) == 0) {
      return Bad(at + ".preference", "'" + s.preference + "' is not in preference_names");
    }
    if (!(s.mix_weight >= 0.0) || !std::isfinite(s.mix_weight)) {
      return Bad(at + ".mix_weight", "must be a finite number >= 0");
    }
    total_weight += s.mix_weight;
  }
  if (!(total_weight > 0.0)) return Bad("sources", "the mix weights must not all be 0");
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"prompt_field", &o.prompt_field},
        {"chosen_field", &o.chosen_field},
        {"rejected_field", &o.rejected_field},
        {"preference_field", &o.preference_field}}) {
    if (value->empty()) return Bad(field, "must not be empty");
  }
  if (!ChatTemplate::Named(o.chat_template).ok()) {
    return Bad("chat_template", ChatTemplate::Named(o.chat_template).status().ToString());
  }
  if (o.max_length < 2) return Bad("max_length", "must be at least 2");
  if (o.max_prompt_length < 0) return Bad("max_prompt_length", "must be >= 0");
  if (o.max_prompt_length >= o.max_length) {
    return Bad("max_prompt_length", "must be smaller than max_length (room for a response)");
  }
  if (o.micro_batch_size < 1) return Bad("micro_batch_size", "must be at least 1");
  if (o.samples_per_epoch < 0) return Bad("samples_per_epoch", "must be >= 0");
  return absl::OkStatus();
}

}  // namespace pmol::data
