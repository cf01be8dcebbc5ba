// `pmol tokenize --tokenizer=DIR (--text=STRING | --file=FILE) [--decode]
//                [--add_special_tokens]`
// Converts text to token ids with a Hugging Face tokenizer.json (DIR holds
// tokenizer.json, or DIR is the file itself), or ids back to text with --decode.
// Output, on stdout, one line per input line (see pmol/data/tokenize_tool.h):
//   encode: the line's token ids separated by spaces (no BOS/EOS unless
//           --add_special_tokens, which applies the file's post-processor);
//   decode: each input line is whitespace-separated ids; prints their text.
// --text is split at '\n' into lines; --file=- reads stdin.
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "pmol/core/status.h"
#include "pmol/data/tokenize_tool.h"
#include "pmol/data/tokenizer.h"

DEFINE_string(tokenizer, "", "tokenizer.json, or a directory holding one");
DEFINE_string(text, "", "text to encode (or ids to decode); lines split at newlines");
DEFINE_string(file, "", "file to read instead of --text ('-' for stdin)");
DEFINE_bool(decode, false, "read token ids, print text");
DEFINE_bool(add_special_tokens, false, "add the tokenizer's BOS/EOS (post-processor) when encoding");

namespace pmol {
namespace {

absl::Status RunTokenize() {
  if (FLAGS_tokenizer.empty()) return absl::InvalidArgumentError("--tokenizer is required");
  const bool has_text = !gflags::GetCommandLineFlagInfoOrDie("text").is_default;
  const bool has_file = !FLAGS_file.empty();
  if (has_text == has_file) {
    return absl::InvalidArgumentError("give exactly one of --text or --file");
  }
  PMOL_ASSIGN_OR_RETURN(std::unique_ptr<data::Tokenizer> tokenizer,
                        data::Tokenizer::Load(FLAGS_tokenizer));
  if (has_text) {
    std::istringstream in(FLAGS_text);
    return data::TokenizeLines(*tokenizer, in, std::cout, FLAGS_decode, FLAGS_add_special_tokens,
                               "--text");
  }
  if (FLAGS_file == "-") {
    return data::TokenizeLines(*tokenizer, std::cin, std::cout, FLAGS_decode,
                               FLAGS_add_special_tokens, "stdin");
  }
  std::ifstream in(FLAGS_file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(FLAGS_file, ": cannot open"));
  return data::TokenizeLines(*tokenizer, in, std::cout, FLAGS_decode, FLAGS_add_special_tokens,
                             FLAGS_file);
}

}  // namespace

extern const Command kTokenizeCommand = {
    "tokenize", "text -> token ids (or ids -> text with --decode) with a tokenizer.json",
    &RunTokenize};

}  // namespace pmol
