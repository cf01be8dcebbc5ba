// A Hugging Face `tokenizer.json` tokenizer: byte-level BPE (GPT-2, Llama 3, Qwen2 /
// 2.5 / 3, with their split regexes) and SentencePiece-style BPE with byte fallback
// (Llama 2, Mistral: "▁" metaspace from Prepend + Replace normalizers or a Metaspace
// pre-tokenizer), with added / special tokens, the file's post-processor (BOS / EOS)
// and its decoder.
//
// Encode(text):
//   1. split the raw text at added tokens whose normalized flag is false
//      (added_vocabulary.h);
//   2. normalize each remaining section (normalizer.h), then split it at the added
//      tokens whose normalized flag is true;
//   3. pre-tokenize each section into pieces (pre_tokenizer.h); BPE-encode each piece
//      (bpe_model.h); added tokens map straight to their ids;
//   4. with add_special_tokens, wrap with the post-processor's ids (post_processor.h).
// Decode(ids): ids -> token strings (added tokens by content, optionally skipping
//   special ones) -> the decoder chain (decoder.h).
// Input that is not valid UTF-8 is first made valid by replacing each maximal invalid
// subsequence with U+FFFD (callers that must reject it check with IsValidUtf8).
#ifndef PMOL_DATA_TOKENIZER_H_
#define PMOL_DATA_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "pmol/data/added_vocabulary.h"
#include "pmol/data/bpe_model.h"
#include "pmol/data/decoder.h"
#include "pmol/data/normalizer.h"
#include "pmol/data/post_processor.h"
#include "pmol/data/pre_tokenizer.h"

namespace pmol::data {

class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a directory holding one. A tokenizer_config.json
  // beside it (optional) names the bos / eos / pad tokens.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);

  // Builds from parsed JSON; `name` (e.g. the file path) prefixes error messages;
  // `config` is the parsed tokenizer_config.json or null.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(const nlohmann::json& tokenizer,
                                                             const nlohmann::json& config,
                                                             const std::string& name);

  // Token ids of text. Thread-safe.
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const;
  // Text of ids; ids outside the vocabulary are skipped. Thread-safe.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  std::optional<std::string> IdToToken(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // One past the largest id (model vocabulary and added tokens together).
  int32_t vocab_size() const { return vocab_size_; }

  // Ids that add_special_tokens puts before / after the text.
  const std::vector<int32_t>& prefix_ids() const { return post_processor_.prefix; }
  const std::vector<int32_t>& suffix_ids() const { return post_processor_.suffix; }
  // BOS / EOS / PAD ids, from tokenizer_config.json when present, otherwise from the
  // post-processor (first prefix id, last suffix id), otherwise from well-known names
  // (<s>, </s>, <|begin_of_text|>, <|end_of_text|>, <|endoftext|>, <pad>, <|pad|>).
  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  std::optional<int32_t> pad_id() const { return pad_id_; }

  const std::string& name() const { return name_; }

 private:
  Tokenizer() = default;
  void EncodeSection(std::string_view text, bool first_section, std::vector<int32_t>* ids) const;

  std::string name_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_;
  PostProcessor post_processor_;
  std::unique_ptr<Decoder> decoder_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_, eos_id_, pad_id_;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_TOKENIZER_H_
