// Text normalizers of Hugging Face `tokenizer.json` ("normalizer" field), applied to
// each stretch of text between added tokens before pre-tokenization:
//   NFC, NFD, NFKC, NFKD   Unicode normalization forms (ICU)
//   Lowercase              full Unicode lowercasing (ICU, root locale)
//   Prepend{prepend}       prefix non-empty text with `prepend` (Llama 2's "▁")
//   Replace{pattern,content}  replace every match of a literal String or a Regex
//   Strip{left,right}      remove leading / trailing Unicode whitespace
//   Sequence{normalizers}  apply in order
// Unknown types are an error naming the field, never silently ignored.
#ifndef PMOL_DATA_NORMALIZER_H_
#define PMOL_DATA_NORMALIZER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(std::string_view text) const = 0;
};

// Builds the normalizer described by j (null j gives nullptr: no normalization).
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j,
                                                            const std::string& where);

// Unicode normalization of valid UTF-8 text; form is "NFC", "NFD", "NFKC" or "NFKD".
std::string UnicodeNormalize(std::string_view text, std::string_view form);

}  // namespace pmol::data

#endif  // PMOL_DATA_NORMALIZER_H_
