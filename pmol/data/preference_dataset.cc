// Loading, checking, tokenizing and truncating preference pairs (see
// preference_dataset.h).
#include "pmol/data/preference_dataset.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"
#include "pmol/data/preference_parser.h"
#include "pmol/data/truncation.h"

namespace pmol::data {

std::string PreferenceDataset::Summary() const {
  std::string out = bad_input.Summary(static_cast<int64_t>(pairs.size()));
  if (truncated > 0) absl::StrAppend(&out, "data: ", truncated, " kept pairs were truncated\n");
  return out;
}

absl::StatusOr<PreferenceDataset> LoadPreferenceDataset(const DataOptions& options,
                                                        const Tokenizer& tokenizer) {
  PMOL_RETURN_IF_ERROR(ValidateDataOptions(options));
  PreferenceDataset dataset;
  const bool fail = options.on_bad_input == BadInputPolicy::kFail;
  const std::vector<int32_t> prefix =
      options.add_special_tokens ? tokenizer.prefix_ids() : std::vector<int32_t>();
  const std::optional<int32_t> eos = tokenizer.eos_id();

  for (size_t s = 0; s < options.sources.size(); ++s) {
    const DataSourceOptions& source = options.sources[s];
    std::ifstream in(source.path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(source.path, ": cannot open"));
    PreferenceParser parser(options, source);
    int64_t kept = 0;
    std::string line;
    int64_t line_number = 0;
    auto bad = [&](BadInputReason reason, const std::string& detail) -> absl::Status {
      if (fail) {
        return absl::InvalidArgumentError(FormatBadInput(source.path, line_number, reason, detail));
      }
      dataset.bad_input.Record(source.path, line_number, reason, detail);
      return absl::OkStatus();
    };
    while (std::getline(in, line)) {
      ++line_number;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank line
      ParseOutcome parsed = parser.Parse(line);
      if (!parsed.ok) {
        PMOL_RETURN_IF_ERROR(bad(parsed.reason, parsed.detail));
        continue;
      }
      TokenizedPair pair;
      pair.prompt = prefix;
      const std::vector<int32_t> prompt_ids = tokenizer.Encode(parsed.text.prompt, false);
      pair.prompt.insert(pair.prompt.end(), prompt_ids.begin(), prompt_ids.end());
      pair.chosen = tokenizer.Encode(parsed.text.chosen, false);
      pair.rejected = tokenizer.Encode(parsed.text.rejected, false);
      if (options.append_eos && parsed.text.responses_need_eos && eos.has_value()) {
        pair.chosen.push_back(*eos);
        pair.rejected.push_back(*eos);
      }
      const TruncationResult t =
          TruncatePair(options, static_cast<int32_t>(prefix.size()), &pair.prompt, &pair.chosen,
                       &pair.rejected);
      if (t == TruncationResult::kOverlong) {
        PMOL_RETURN_IF_ERROR(bad(BadInputReason::kOverlong,
                                 absl::StrCat("prompt ", pair.prompt.size(), " + response ",
                                              std::max(pair.chosen.size(), pair.rejected.size()),
                                              " tokens > max_length ", options.max_length)));
        continue;
      }
      if (pair.chosen == pair.rejected && !options.unpaired) {
        // Different texts that become the same ids after truncation carry no preference.
        PMOL_RETURN_IF_ERROR(bad(BadInputReason::kIdenticalResponses, "after truncation"));
        continue;
      }
      if (t == TruncationResult::kTruncated) ++dataset.truncated;
      pair.preference = parsed.text.preference;
      pair.source = static_cast<int32_t>(s);
      pair.line = line_number;
      dataset.pairs.push_back(std::move(pair));
      ++kept;
    }
    if (in.bad()) return absl::DataLossError(absl::StrCat(source.path, ": read error"));
    dataset.source_sizes.push_back(kept);
    dataset.mix_weights.push_back(source.mix_weight);
  }
  return dataset;
}

}  // namespace pmol::data
