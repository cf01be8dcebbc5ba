// Byte-level BPE training (see bpe_trainer.h).
#include "pmol/data/bpe_trainer.h"

#include <map>

#include "absl/container/flat_hash_map.h"
#include "kernels/check.h"
#include "pmol/data/absl_compat.h"
#include "pmol/data/byte_level.h"
#include "pmol/data/pre_tokenizer.h"
#include "pmol/data/regex.h"

namespace pmol::data {

nlohmann::json TrainByteLevelBpe(const std::vector<std::string>& texts,
                                 const BpeTrainerOptions& options) {
  auto regex = Regex::Compile(kGpt2SplitPattern);
  PMOL_CHECK(regex.ok());
  // 1. Piece counts (std::map: a fixed iteration order).
  std::map<std::string, int64_t> piece_counts;
  for (const std::string& text : texts) {
    for (const auto& [begin, end] : (*regex)->FindAll(text)) {
      ++piece_counts[text.substr(begin, end - begin)];
    }
  }
  // 2. Byte alphabet.
  std::vector<std::string> tokens;
  absl::flat_hash_map<std::string, int32_t> token_ids;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(ByteToUnicode(static_cast<unsigned char>(b)));
    token_ids[tokens.back()] = b;
  }
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [piece, count] : piece_counts) {
    Word w{{}, count};
    for (unsigned char c : piece) w.symbols.push_back(c);
    words.push_back(std::move(w));
  }
  // 3. Merges.
  const int target = options.vocab_size - static_cast<int>(options.special_tokens.size());
  nlohmann::json merges = nlohmann::json::array();
  while (static_cast<int>(tokens.size()) < target) {
    absl::flat_hash_map<uint64_t, int64_t> pair_counts;
    for (const Word& w : words) {
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        const uint64_t key = (static_cast<uint64_t>(w.symbols[i]) << 32) |
                             static_cast<uint32_t>(w.symbols[i + 1]);
        pair_counts[key] += w.count;
      }
    }
    uint64_t best_key = 0;
    int64_t best_count = 0;
    for (const auto& [key, count] : pair_counts) {
      if (count > best_count || (count == best_count && key < best_key)) {
        best_key = key;
        best_count = count;
      }
    }
    if (best_count < options.min_frequency || best_count == 0) break;
    const int32_t left = static_cast<int32_t>(best_key >> 32);
    const int32_t right = static_cast<int32_t>(best_key & 0xFFFFFFFFu);
    const std::string merged = tokens[left] + tokens[right];
    int32_t merged_id;
    auto it = token_ids.find(AsAbsl(merged));
    if (it != token_ids.end()) {
      merged_id = it->second;
    } else {
      merged_id = static_cast<int32_t>(tokens.size());
      tokens.push_back(merged);
      token_ids[merged] = merged_id;
    }
    merges.push_back(tokens[left] + " " + tokens[right]);
    for (Word& w : words) {
      std::vector<int32_t> out;
      out.reserve(w.symbols.size());
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == left && w.symbols[i + 1] == right) {
          out.push_back(merged_id);
          ++i;
        } else {
          out.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(out);
    }
  }
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab[tokens[id]] = id;
  nlohmann::json added = nlohmann::json::array();
  for (size_t k = 0; k < options.special_tokens.size(); ++k) {
    added.push_back({{"id", tokens.size() + k},
                     {"content", options.special_tokens[k]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                     {"add_prefix_space", false},
                                     {"trim_offsets", true},
                                     {"use_regex", true}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", byte_level},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

}  // namespace pmol::data
