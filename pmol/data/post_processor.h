// Post-processors of `tokenizer.json` ("post_processor" field): they add the special
// tokens around an encoded sequence when add_special_tokens is requested.
//   TemplateProcessing{single}  e.g. [<s>, $A] for Llama 2: each SpecialToken item
//       expands to the ids listed under special_tokens[name].ids; Sequence A is the text
//   RobertaProcessing / BertProcessing{cls, sep}  [cls, $A, sep]
//   ByteLevel  changes offsets only, so no ids are added
//   Sequence{processors}  applied in order
// It also reports which special ids come before and after the text (the BOS and EOS
// that this file adds).
#ifndef PMOL_DATA_POST_PROCESSOR_H_
#define PMOL_DATA_POST_PROCESSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

struct PostProcessor {
  std::vector<int32_t> prefix;  // ids before the sequence
  std::vector<int32_t> suffix;  // ids after the sequence

  void Apply(std::vector<int32_t>* ids) const {
    if (prefix.empty() && suffix.empty()) return;
    ids->insert(ids->begin(), prefix.begin(), prefix.end());
    ids->insert(ids->end(), suffix.begin(), suffix.end());
  }
};

// Builds the post-processor described by j (null j: adds nothing).
absl::StatusOr<PostProcessor> ParsePostProcessor(const nlohmann::json& j,
                                                 const std::string& where);

}  // namespace pmol::data

#endif  // PMOL_DATA_POST_PROCESSOR_H_
