// BPE model: vocabulary, merge ranks, merge loop and cache (see bpe_model.h).
#include "pmol/data/bpe_model.h"

#include <queue>

#include "absl/strings/str_format.h"
#include "pmol/core/status.h"
#include "pmol/data/json_fields.h"
#include "pmol/data/utf8.h"

namespace pmol::data {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& j,
                                                             const std::string& where) {
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  PMOL_ASSIGN_OR_RETURN(std::string type, GetStringOr(j, where, "type", "BPE"));
  if (type != "BPE") {
    return FieldError(where, "type",
                      absl::StrCat("model type '", type, "' is not supported (only BPE)"));
  }
  if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0.0) {
    return FieldError(where, "dropout", "BPE dropout is not supported; set it to null");
  }
  PMOL_ASSIGN_OR_RETURN(model->continuing_subword_prefix_,
                        GetStringOr(j, where, "continuing_subword_prefix", ""));
  PMOL_ASSIGN_OR_RETURN(model->end_of_word_suffix_,
                        GetStringOr(j, where, "end_of_word_suffix", ""));
  PMOL_ASSIGN_OR_RETURN(model->fuse_unk_, GetBoolOr(j, where, "fuse_unk", false));
  PMOL_ASSIGN_OR_RETURN(model->byte_fallback_, GetBoolOr(j, where, "byte_fallback", false));
  PMOL_ASSIGN_OR_RETURN(model->ignore_merges_, GetBoolOr(j, where, "ignore_merges", false));

  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* vocab, GetField(j, where, "vocab"));
  if (!vocab->is_object()) return FieldError(where, "vocab", "expected an object");
  model->vocab_.reserve(vocab->size());
  int32_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<long long>() < 0 ||
        it.value().get<long long>() > (1 << 30)) {
      return FieldError(where, "vocab", absl::StrCat("token '", it.key(),
                                                     "': expected a non-negative integer id"));
    }
    const int32_t id = it.value().get<int32_t>();
    model->vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  model->id_to_token_.resize(max_id + 1);
  model->id_present_.assign(max_id + 1, false);
  for (const auto& [token, id] : model->vocab_) {
    model->id_to_token_[id] = token;
    model->id_present_[id] = true;
  }

  PMOL_ASSIGN_OR_RETURN(std::string unk, GetStringOr(j, where, "unk_token", ""));
  if (!unk.empty()) {
    auto it = model->vocab_.find(unk);
    if (it == model->vocab_.end()) {
      return FieldError(where, "unk_token", "'" + unk + "' is not in the vocabulary");
    }
    model->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = model->vocab_.find(absl::StrFormat("<0x%02X>", b));
    model->byte_ids_[b] = it == model->vocab_.end() ? -1 : it->second;
  }

  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* merges, GetField(j, where, "merges"));
  if (!merges->is_array()) return FieldError(where, "merges", "expected an array");
  model->merges_.reserve(merges->size());
  const std::string& prefix = model->continuing_subword_prefix_;
  for (size_t i = 0; i < merges->size(); ++i) {
    const nlohmann::json& m = (*merges)[i];
    std::string left, right;
    if (m.is_string()) {  // "left right"
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return FieldError(where, absl::StrCat("merges[", i, "]"),
                          "expected two tokens separated by one space");
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return FieldError(where, absl::StrCat("merges[", i, "]"),
                        "expected \"a b\" or [\"a\", \"b\"]");
    }
    std::string merged = left;
    if (!prefix.empty() && right.compare(0, prefix.size(), prefix) == 0) {
      merged.append(right, prefix.size());
    } else {
      merged.append(right);
    }
    auto l = model->vocab_.find(left), r = model->vocab_.find(right),
         n = model->vocab_.find(merged);
    if (l == model->vocab_.end() || r == model->vocab_.end() || n == model->vocab_.end()) {
      return FieldError(where, absl::StrCat("merges[", i, "]"),
                        absl::StrCat("merge '", left, " ", right,
                                     "' uses or makes a token outside the vocabulary"));
    }
    // The first (lowest-rank) occurrence of a pair wins, as in HF tokenizers.
    model->merges_.try_emplace(PairKey(l->second, r->second),
                               Merge{static_cast<int32_t>(i), n->second});
  }
  return model;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AsAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || !id_present_[id]) {
    return nullptr;
  }
  return &id_to_token_[id];
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return;
  if (piece.size() > kMaxCachedPieceBytes) {
    EncodeUncached(piece, ids);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(AsAbsl(piece));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> result;
  EncodeUncached(piece, &result);
  ids->insert(ids->end(), result.begin(), result.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(std::string(piece), std::move(result));
}

void BpeModel::EncodeUncached(std::string_view piece, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    auto it = vocab_.find(AsAbsl(piece));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Symbols form a doubly linked list over the initial characters; a merged symbol
  // keeps the slot of its left part, the right part's slot goes dead.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  bool last_was_unk = false;
  auto push = [&](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  std::string scratch;
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t len = Utf8CharLength(piece, pos);
    const bool first = pos == 0;
    const bool last = pos + len == piece.size();
    std::string_view ch = piece.substr(pos, len);
    pos += len;
    std::string_view lookup = ch;
    if ((!first && !continuing_subword_prefix_.empty()) ||
        (last && !end_of_word_suffix_.empty())) {
      scratch.clear();
      if (!first) scratch += continuing_subword_prefix_;
      scratch.append(ch);
      if (last) scratch += end_of_word_suffix_;
      lookup = scratch;
    }
    auto it = vocab_.find(AsAbsl(lookup));
    if (it != vocab_.end()) {
      push(it->second);
      last_was_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : ch) all = all && byte_ids_[c] >= 0;
      if (all) {
        for (unsigned char c : ch) push(byte_ids_[c]);
        last_was_unk = false;
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (!(fuse_unk_ && last_was_unk)) push(*unk_id_);
      last_was_unk = true;
    }
  }
  if (symbols.empty()) return;

  struct Candidate {
    int32_t rank;
    int32_t left;   // slot of the left symbol
    int32_t right;  // slot of the right symbol
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) heap.push({it->second.rank, left, right, it->second.merged_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = symbols[c.left];
    if (!left.alive || left.next != c.right || !symbols[c.right].alive) continue;
    // The pair must still be the one this candidate was made for.
    auto it = merges_.find(PairKey(left.id, symbols[c.right].id));
    if (it == merges_.end() || it->second.rank != c.rank) continue;
    Symbol& right = symbols[c.right];
    left.id = c.merged_id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.alive = false;
    consider(left.prev);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace pmol::data
