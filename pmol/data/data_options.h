// DataOptions: everything the data pipeline needs from the run config, as a plain
// struct whose field names follow the protobuf the run config will use (a later
// change maps proto -> DataOptions). ValidateDataOptions checks it and names the
// offending field ("data.max_length: ...").
//
// Sources. Each source is one JSONL file. `format` says how a line is read:
//   fields    {"prompt": str, "chosen": str, "rejected": str, "preference": name|index}
//             (field names configurable below); prompt and responses are raw text
//   hh_rlhf   Anthropic HH-RLHF: {"chosen": transcript, "rejected": transcript} with
//             "\n\nHuman: " / "\n\nAssistant: " turns; the prompt is the chosen
//             transcript up to and including its last "\n\nAssistant:", which the
//             rejected transcript must share; the rest of each is the response
//   messages  chat messages [{"role": system|user|assistant, "content": str}] rendered
//             by `chat_template`: either "prompt" (messages) + "chosen"/"rejected"
//             (assistant message or list ending with one), or full "chosen"/"rejected"
//             conversations whose last message is the assistant reply and whose
//             earlier messages are identical (they form the prompt)
//   auto      messages if "chosen" is a list, hh_rlhf if there is no prompt field and
//             "chosen" contains "\n\nAssistant:", else fields
// A source's `preference` tags every pair of the file; when empty, each line names
// its own (preference_field: a name from preference_names or a 0-based index).
// `mix_weight`: the share of each epoch drawn from this source is
// mix_weight / sum(mix_weight) (sampler.h), so a small file can be up-sampled.
//
// Truncation (truncation.h): prompts longer than max_prompt_length keep their end
// (kKeepEnd: the latest turns, plus the tokenizer's leading special ids such as BOS) or
// their start (kKeepStart); then, if prompt + the longer response exceeds max_length,
// both responses are cut to the same budget (truncate_responses) or the pair is an
// over-long bad input. The same rule applies to chosen and rejected.
//
// Bad input (bad_input.h): invalid UTF-8, invalid JSON, missing / mistyped fields,
// empty responses, identical chosen and rejected, unknown preference, over-long
// pairs: kSkip counts and skips them (a summary is printed before training), kFail
// stops at the first with "FILE:LINE: reason".
#ifndef PMOL_DATA_DATA_OPTIONS_H_
#define PMOL_DATA_DATA_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace pmol::data {

enum class DataFormat { kAuto, kFields, kHhRlhf, kMessages };
enum class PromptTruncation { kKeepEnd, kKeepStart };
enum class BadInputPolicy { kSkip, kFail };

struct DataSourceOptions {
  std::string path;
  DataFormat format = DataFormat::kAuto;
  std::string preference;  // tag for the whole file; empty: per-line preference_field
  double mix_weight = 1.0;
};

struct DataOptions {
  std::vector<std::string> preference_names;  // e.g. helpfulness, harmlessness, empathy
  std::vector<DataSourceOptions> sources;

  // Field names of the `fields` format (and of the preference label in any format).
  std::string prompt_field = "prompt";
  std::string chosen_field = "chosen";
  std::string rejected_field = "rejected";
  std::string preference_field = "preference";

  // Named chat template for the `messages` format: chatml, llama2, llama3, plain.
  std::string chat_template = "chatml";

  // Token budget.
  int32_t max_length = 512;         // prompt + response, per sequence
  int32_t max_prompt_length = 256;  // 0: no separate prompt limit
  PromptTruncation prompt_truncation = PromptTruncation::kKeepEnd;
  bool truncate_responses = true;   // false: pairs that do not fit are over-long bad input

  // Special tokens: the tokenizer's post-processor prefix (e.g. BOS) before the
  // prompt; the tokenizer's EOS after each response (for `fields`, `hh_rlhf`, and the
  // `plain` template; the other chat templates end a reply with their own marker).
  bool add_special_tokens = true;
  bool append_eos = true;

  BadInputPolicy on_bad_input = BadInputPolicy::kSkip;
  // Supervised fine-tuning data: a line needs no rejected reply (the pair's rejected
  // reply is a copy of the chosen one and is never trained on) and no preference label
  // (preference 0). Besides the formats above, such a line may be a whole conversation
  // {"messages": [..., {"role": "assistant", ...}]}: the prompt is every message before
  // the last, which must be the assistant's reply.
  bool unpaired = false;

  // Batching and sampling.
  int32_t micro_batch_size = 4;  // rows per micro-batch (pairs when not packing)
  bool packing = false;          // several pairs per row, block-diagonal segments
  int64_t samples_per_epoch = 0; // 0: the number of valid pairs over all sources
  bool shuffle = true;
  uint64_t seed = 1234;
};

absl::Status ValidateDataOptions(const DataOptions& options);

// Parses "auto" / "fields" / "hh_rlhf" / "messages" (and the other enums) for flags
// and text configs.
absl::Status ParseDataFormat(const std::string& name, DataFormat* format);

}  // namespace pmol::data

#endif  // PMOL_DATA_DATA_OPTIONS_H_
