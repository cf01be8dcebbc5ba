// A compiled Unicode regular expression (PCRE2, UTF + UCP, JIT when available) for
// the pre-tokenizer split patterns of Hugging Face tokenizers (GPT-2, Llama 3, Qwen:
// Unicode classes \p{L} \p{N}, case-insensitive groups, look-ahead `\s+(?!\S)`).
// FindAll returns the non-overlapping leftmost matches, scanning left to right;
// an empty match advances one character. The input must be valid UTF-8.
#ifndef PMOL_DATA_REGEX_H_
#define PMOL_DATA_REGEX_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pmol::data {

class Regex {
 public:
  // Compiles `pattern`; an invalid pattern is an InvalidArgument error naming the
  // offset of the problem.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // Escapes a literal string so that it matches itself.
  static std::string Escape(std::string_view literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the matches in text. Thread-safe.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  Regex() = default;
  void* code_ = nullptr;  // pcre2_code*
};

}  // namespace pmol::data

#endif  // PMOL_DATA_REGEX_H_
