// Added and special tokens of `tokenizer.json` ("added_tokens"): strings that are
// matched verbatim in the input before the normalizer and the model see it, and that
// map straight to their ids. Matching is leftmost-longest (like HF's Aho-Corasick
// matcher): scanning left to right, at each position the longest token that matches
// wins. Options per token: lstrip / rstrip (also swallow the whitespace on that side),
// single_word (match only between non-word characters), normalized (matched in the
// normalized text rather than the raw text; see tokenizer.cc).
#ifndef PMOL_DATA_ADDED_VOCABULARY_H_
#define PMOL_DATA_ADDED_VOCABULARY_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A piece of input text: either an added token (id >= 0) or plain text (id == -1).
struct TextSection {
  std::string_view text;
  int32_t id = -1;
};

class AddedVocabulary {
 public:
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& j,
                                                  const std::string& where);
  // Splits text at the tokens whose `normalized` flag equals `normalized`.
  std::vector<TextSection> Split(std::string_view text, bool normalized) const;
  bool has_normalized_tokens() const { return has_normalized_; }

  const AddedToken* FindById(int32_t id) const;
  const AddedToken* FindByContent(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  // First byte -> indices of tokens starting with it, longest first.
  std::vector<std::vector<size_t>> by_first_byte_;
  bool has_normalized_ = false;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_ADDED_VOCABULARY_H_
