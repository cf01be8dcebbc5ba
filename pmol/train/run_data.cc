// A run's tokenizer and datasets from its config; see run_data.h.
#include "pmol/train/run_data.h"

#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"

namespace pmol {
namespace {

absl::Status CheckVocabulary(const data::PreferenceDataset& set, const data::DataOptions& options,
                             int64_t vocab_size) {
  for (const data::TokenizedPair& pair : set.pairs) {
    for (const auto* ids : {&pair.prompt, &pair.chosen, &pair.rejected}) {
      for (int32_t id : *ids) {
        if (id >= 0 && id < vocab_size) continue;
        return absl::InvalidArgumentError(absl::StrCat(
            options.sources[pair.source].path, ":", pair.line, ": token id ", id,
            " is outside the model's vocabulary [0, ", vocab_size,
            "): data.tokenizer does not belong to model.path"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<data::DataOptions> DataOptionsFromConfig(const config::RunConfig& config, bool eval) {
  const config::DataConfig& d = config.data();
  data::DataOptions o;
  o.preference_names.assign(d.preference_names().begin(), d.preference_names().end());
  for (const config::DataSource& s : eval ? d.eval() : d.train()) {
    data::DataSourceOptions source;
    source.path = s.path();
    absl::Status format = data::ParseDataFormat(s.format(), &source.format);
    if (!format.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("data.", eval ? "eval" : "train", " ", s.path(),
                                                     ": format: ", format.message()));
    }
    source.preference = s.preference();
    source.mix_weight = s.mix_weight();
    o.sources.push_back(source);
  }
  o.prompt_field = d.prompt_field();
  o.chosen_field = d.chosen_field();
  o.rejected_field = d.rejected_field();
  o.preference_field = d.preference_field();
  o.chat_template = d.chat_template();
  o.max_length = d.max_length();
  o.max_prompt_length = d.max_prompt_length();
  o.prompt_truncation = d.prompt_truncation() == "keep_start" ? data::PromptTruncation::kKeepStart
                                                              : data::PromptTruncation::kKeepEnd;
  o.truncate_responses = d.truncate_responses();
  o.add_special_tokens = d.add_special_tokens();
  o.append_eos = d.append_eos();
  o.on_bad_input = d.on_bad_input() == "fail" ? data::BadInputPolicy::kFail : data::BadInputPolicy::kSkip;
  o.unpaired = config.objective().kind() == config::ObjectiveConfig::SFT;
  o.micro_batch_size = d.micro_batch_size();
  o.packing = d.packing();
  o.shuffle = eval ? false : d.shuffle();
  o.seed = config.seed();
  if (o.preference_names.empty()) {
    // Labels given as indices need no names: name them after the groups when the config
    // has some, else "pref<k>" per group, else one preference "all" (SFT data).
    for (int i = 0; i < config.adapter().groups_size(); ++i) {
      const std::string& name = config.adapter().groups(i).name();
      o.preference_names.push_back(name.empty() ? absl::StrCat("pref", i) : name);
    }
    for (int i = 0; o.preference_names.empty() && i < config.adapter().num_groups(); ++i) {
      o.preference_names.push_back(absl::StrCat("pref", i));
    }
    if (o.preference_names.empty()) o.preference_names.push_back("all");
  }
  absl::Status valid = data::ValidateDataOptions(o);
  if (!valid.ok()) return absl::InvalidArgumentError(valid.message());
  return o;
}

absl::StatusOr<RunData> LoadRunData(const config::RunConfig& config, int64_t vocab_size,
                                    std::ostream* log) {
  RunData run;
  if (config.data().tokenizer().empty()) return absl::InvalidArgumentError("data.tokenizer: required");
  if (config.data().train_size() == 0) return absl::InvalidArgumentError("data.train: no sources");
  PMOL_ASSIGN_OR_RETURN(run.tokenizer, data::Tokenizer::Load(config.data().tokenizer()));
  run.pad_id = run.tokenizer->pad_id().value_or(run.tokenizer->eos_id().value_or(0));
  PMOL_ASSIGN_OR_RETURN(run.train_options, DataOptionsFromConfig(config, false));
  PMOL_ASSIGN_OR_RETURN(run.train, data::LoadPreferenceDataset(run.train_options, *run.tokenizer));
  if (log != nullptr) *log << "train " << run.train.Summary();
  if (run.train.pairs.empty()) {
    return absl::InvalidArgumentError("data.train: no usable pairs (every line was bad input; see above)");
  }
  PMOL_RETURN_IF_ERROR(CheckVocabulary(run.train, run.train_options, vocab_size));
  if (config.data().eval_size() > 0) {
    PMOL_ASSIGN_OR_RETURN(run.eval_options, DataOptionsFromConfig(config, true));
    PMOL_ASSIGN_OR_RETURN(run.eval, data::LoadPreferenceDataset(run.eval_options, *run.tokenizer));
    if (log != nullptr) *log << "eval " << run.eval.Summary();
    PMOL_RETURN_IF_ERROR(CheckVocabulary(run.eval, run.eval_options, vocab_size));
  }
  return run;
}

}  // namespace pmol
