// Added-token matching (see added_vocabulary.h).
#include "pmol/data/added_vocabulary.h"

#include <algorithm>

#include "pmol/core/status.h"
#include "pmol/data/json_fields.h"
#include "pmol/data/utf8.h"

namespace pmol::data {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool IsWordByte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         c == '_' || c >= 0x80;
}

}  // namespace

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const nlohmann::json& j,
                                                          const std::string& where) {
  AddedVocabulary vocab;
  vocab.by_first_byte_.resize(256);
  if (j.is_null()) return vocab;
  if (!j.is_array()) return FieldError(where, "", "expected an array");
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string at = absl::StrCat(where, "[", i, "]");
    const nlohmann::json& t = j[i];
    AddedToken token;
    PMOL_ASSIGN_OR_RETURN(long long id, GetIntOr(t, at, "id", -1));
    if (id < 0) return FieldError(at, "id", "missing or negative");
    token.id = static_cast<int32_t>(id);
    PMOL_ASSIGN_OR_RETURN(token.content, GetString(t, at, "content"));
    if (token.content.empty()) return FieldError(at, "content", "must not be empty");
    PMOL_ASSIGN_OR_RETURN(token.single_word, GetBoolOr(t, at, "single_word", false));
    PMOL_ASSIGN_OR_RETURN(token.lstrip, GetBoolOr(t, at, "lstrip", false));
    PMOL_ASSIGN_OR_RETURN(token.rstrip, GetBoolOr(t, at, "rstrip", false));
    PMOL_ASSIGN_OR_RETURN(token.special, GetBoolOr(t, at, "special", false));
    PMOL_ASSIGN_OR_RETURN(token.normalized, GetBoolOr(t, at, "normalized", !token.special));
    vocab.has_normalized_ = vocab.has_normalized_ || token.normalized;
    const size_t index = vocab.tokens_.size();
    vocab.by_id_[token.id] = index;
    vocab.by_content_[token.content] = index;
    vocab.by_first_byte_[static_cast<unsigned char>(token.content[0])].push_back(index);
    vocab.tokens_.push_back(std::move(token));
  }
  for (auto& list : vocab.by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return vocab.tokens_[a].content.size() > vocab.tokens_[b].content.size();
    });
  }
  return vocab;
}

std::vector<TextSection> AddedVocabulary::Split(std::string_view text, bool normalized) const {
  std::vector<TextSection> sections;
  if (tokens_.empty()) {
    if (!text.empty()) sections.push_back({text, -1});
    return sections;
  }
  size_t plain_start = 0;  // start of the pending plain-text section
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      const AddedToken& t = tokens_[index];
      if (t.normalized != normalized) continue;
      if (text.compare(pos, t.content.size(), t.content) != 0) continue;
      if (t.single_word) {
        const size_t end = pos + t.content.size();
        if ((pos > 0 && IsWordByte(text[pos - 1])) ||
            (end < text.size() && IsWordByte(text[end]))) {
          continue;
        }
      }
      match = &t;
      break;
    }
    if (match == nullptr) {
      pos += Utf8CharLength(text, pos);
      continue;
    }
    size_t begin = pos, end = pos + match->content.size();
    if (match->lstrip) {
      while (begin > plain_start && IsAsciiSpace(text[begin - 1])) --begin;
    }
    if (match->rstrip) {
      while (end < text.size() && IsAsciiSpace(text[end])) ++end;
    }
    if (begin > plain_start) sections.push_back({text.substr(plain_start, begin - plain_start), -1});
    sections.push_back({text.substr(pos, match->content.size()), match->id});
    pos = end;
    plain_start = end;
  }
  if (plain_start < text.size()) sections.push_back({text.substr(plain_start), -1});
  return sections;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::FindByContent(std::string_view content) const {
  auto it = by_content_.find(AsAbsl(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace pmol::data
