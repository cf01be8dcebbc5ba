// The line-oriented text <-> ids conversion behind `pmol tokenize`.
//   encode: each input line (without its '\n') becomes one output line holding its
//           token ids separated by single spaces (an empty line gives an empty line);
//   decode: each input line holds token ids separated by whitespace and becomes one
//           output line of decoded text (special tokens are kept).
#ifndef PMOL_DATA_TOKENIZE_TOOL_H_
#define PMOL_DATA_TOKENIZE_TOOL_H_

#include <istream>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "pmol/data/tokenizer.h"

namespace pmol::data {

// `source` names the input in errors ("--text", a file path).
absl::Status TokenizeLines(const Tokenizer& tokenizer, std::istream& in, std::ostream& out,
                           bool decode, bool add_special_tokens, const std::string& source);

}  // namespace pmol::data

#endif  // PMOL_DATA_TOKENIZE_TOOL_H_
