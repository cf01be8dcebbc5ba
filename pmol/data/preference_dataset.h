// Loads the preference sources of DataOptions into tokenized, truncated pairs:
// for each file, each non-blank line is parsed (preference_parser.h), checked,
// tokenized (prompt: the tokenizer's post-processor prefix ids when
// add_special_tokens, then the prompt text; each response: its text, then EOS when
// append_eos and the format needs it) and truncated (truncation.h). Bad lines are
// skipped and counted or fail the load, per on_bad_input (bad_input.h).
#ifndef PMOL_DATA_PREFERENCE_DATASET_H_
#define PMOL_DATA_PREFERENCE_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/data/bad_input.h"
#include "pmol/data/data_options.h"
#include "pmol/data/tokenizer.h"

namespace pmol::data {

struct TokenizedPair {
  std::vector<int32_t> prompt;
  std::vector<int32_t> chosen;    // response ids only
  std::vector<int32_t> rejected;  // response ids only
  int32_t preference = 0;
  int32_t source = 0;  // index into DataOptions::sources
  int64_t line = 0;    // 1-based line in the source file
};

struct PreferenceDataset {
  std::vector<TokenizedPair> pairs;       // grouped by source, in file order
  std::vector<int64_t> source_sizes;      // pairs kept per source
  std::vector<double> mix_weights;        // per source
  int64_t truncated = 0;                  // pairs kept after truncation
  BadInputReport bad_input;
  std::string Summary() const;
};

absl::StatusOr<PreferenceDataset> LoadPreferenceDataset(const DataOptions& options,
                                                        const Tokenizer& tokenizer);

}  // namespace pmol::data

#endif  // PMOL_DATA_PREFERENCE_DATASET_H_
