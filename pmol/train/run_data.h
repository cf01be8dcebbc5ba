// The data of a run, from its config: the tokenizer (data.tokenizer), the training pairs
// (data.train) and the held-out pairs (data.eval), tokenized, truncated and checked
// against the model's vocabulary. DataOptionsFromConfig maps the proto's DataConfig onto
// pmol/data's DataOptions field by field (same names); SFT runs read unpaired lines
// (data_options.h), so supervised conversations need no rejected reply.
#ifndef PMOL_TRAIN_RUN_DATA_H_
#define PMOL_TRAIN_RUN_DATA_H_

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "pmol/data/data_options.h"
#include "pmol/data/preference_dataset.h"
#include "pmol/data/tokenizer.h"
#include "proto/run_config.pb.h"

namespace pmol {

// `eval` picks data.eval instead of data.train as the sources.
absl::StatusOr<data::DataOptions> DataOptionsFromConfig(const config::RunConfig& config, bool eval);

struct RunData {
  std::unique_ptr<data::Tokenizer> tokenizer;
  data::DataOptions train_options, eval_options;
  data::PreferenceDataset train, eval;  // eval: empty without data.eval sources
  int32_t pad_id = 0;                   // the tokenizer's pad id (else eos, else 0)
};

// Loads everything; prints each split's summary (kept pairs, truncated, bad input) to
// `log` (may be null). Errors name the file (tokenizer, data line) or the config field;
// an empty training set is an error, and so is a token id >= vocab_size.
absl::StatusOr<RunData> LoadRunData(const config::RunConfig& config, int64_t vocab_size,
                                    std::ostream* log);

}  // namespace pmol

#endif  // PMOL_TRAIN_RUN_DATA_H_
