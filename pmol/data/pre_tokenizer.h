// Pre-tokenizers of Hugging Face `tokenizer.json` ("pre_tokenizer" field): they cut
// normalized text into pieces that the BPE model encodes independently.
//   Split{pattern, behavior, invert}  regex or literal split; behaviors Isolated,
//       Removed, MergedWithPrevious, MergedWithNext, Contiguous (as in HF tokenizers)
//   ByteLevel{add_prefix_space, use_regex}  optional leading space, optional GPT-2
//       split regex, then every byte mapped to its byte-level character (byte_level.h)
//   Metaspace{replacement, prepend_scheme | add_prefix_space, split}  spaces become
//       the replacement (e.g. "▁"), optionally prepended, optionally split before it
//   Digits{individual_digits}, Whitespace, WhitespaceSplit, Sequence{pretokenizers}
#ifndef PMOL_DATA_PRE_TOKENIZER_H_
#define PMOL_DATA_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

// The GPT-2 split pattern that ByteLevel{use_regex: true} applies.
inline constexpr char kGpt2SplitPattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Rewrites *pieces in place (each piece may become several, or none).
  // first_section is true for text at the start of the input (before any added token).
  virtual void PreTokenize(std::vector<std::string>* pieces, bool first_section) const = 0;
};

// Builds the pre-tokenizer described by j (null j gives nullptr: the whole text is one
// piece).
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j,
                                                                const std::string& where);

}  // namespace pmol::data

#endif  // PMOL_DATA_PRE_TOKENIZER_H_
