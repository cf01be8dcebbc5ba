// The BPE model of Hugging Face `tokenizer.json` ("model": {"type": "BPE", ...}).
//
// Encoding one pre-tokenized piece:
//   1. ignore_merges: if the whole piece is a vocabulary token, it is the answer.
//   2. Initial symbols, one per Unicode character (continuing_subword_prefix before
//      every character but the first, end_of_word_suffix after the last). A character
//      missing from the vocabulary becomes its UTF-8 bytes as "<0xXX>" tokens when
//      byte_fallback is set and they all exist, else unk_token (consecutive unknowns
//      fused into one when fuse_unk), else it is dropped.
//   3. Merges: repeatedly apply the adjacent pair with the lowest merge rank, the
//      leftmost one among equal ranks (a min-heap of (rank, position) with lazy
//      invalidation, as HF tokenizers does), until no adjacent pair has a rank.
// Pair lookup is one hash probe: (left id, right id) -> (rank, merged id). Results for
// short pieces are memoized in a bounded cache shared by all threads.
#ifndef PMOL_DATA_BPE_MODEL_H_
#define PMOL_DATA_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

class BpeModel {
 public:
  // Builds the model from the "model" object; `where` prefixes error messages.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& j,
                                                            const std::string& where);

  // Appends the ids of one piece to *ids. Thread-safe.
  void Encode(std::string_view piece, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of id, or nullptr when id is not in the vocabulary.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void EncodeUncached(std::string_view piece, std::vector<int32_t>* ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // id of "<0xXX>", or -1

  static constexpr size_t kMaxCachedPieceBytes = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 16;
  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_BPE_MODEL_H_
