// Pre-tokenizers of tokenizer.json (see pre_tokenizer.h).
#include "pmol/data/pre_tokenizer.h"

#include <string_view>
#include <utility>

#include "pmol/core/status.h"
#include "pmol/data/byte_level.h"
#include "pmol/data/json_fields.h"
#include "pmol/data/regex.h"

namespace pmol::data {
namespace {

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Cuts text at the matches of regex according to behavior (the semantics of HF
// tokenizers' NormalizedString::split).
void SplitPiece(const Regex& regex, SplitBehavior behavior, bool invert, std::string_view text,
                std::vector<std::string>* out) {
  struct Segment {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Segment> segments;
  size_t pos = 0;
  for (const auto& [begin, end] : regex.FindAll(text)) {
    if (begin > pos) segments.push_back({pos, begin, invert});
    segments.push_back({begin, end, !invert});
    pos = end;
  }
  if (pos < text.size()) segments.push_back({pos, text.size(), invert});

  auto emit = [&](size_t begin, size_t end) {
    if (end > begin) out->emplace_back(text.substr(begin, end - begin));
  };
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) emit(s.begin, s.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) emit(s.begin, s.end);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      // A match joins the piece before it.
      size_t start = 0;
      bool open = false;
      for (size_t i = 0; i < segments.size(); ++i) {
        const Segment& s = segments[i];
        if (!open) {
          start = s.begin;
          open = true;
        }
        if (s.is_match) {
          emit(start, s.end);
          open = false;
        } else if (i + 1 < segments.size() && !segments[i + 1].is_match) {
          emit(start, s.end);
          open = false;
        }
      }
      if (open) emit(start, text.size());
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      // A match joins the piece after it.
      size_t start = 0;
      bool open = false;
      for (size_t i = 0; i < segments.size(); ++i) {
        const Segment& s = segments[i];
        if (s.is_match) {
          if (open) emit(start, s.begin);
          start = s.begin;
          open = true;
        } else {
          if (!open) start = s.begin;
          emit(start, s.end);
          open = false;
        }
      }
      if (open) emit(start, text.size());
      break;
    }
    case SplitBehavior::kContiguous: {
      // Consecutive matches form one piece.
      size_t i = 0;
      while (i < segments.size()) {
        size_t j = i + 1;
        if (segments[i].is_match) {
          while (j < segments.size() && segments[j].is_match) ++j;
        }
        emit(segments[i].begin, segments[j - 1].end);
        i = j;
      }
      break;
    }
  }
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<std::string>* pieces, bool) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) SplitPiece(*regex_, behavior_, invert_, piece, &out);
    *pieces = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool) const override {
    std::vector<std::string> out;
    out.reserve(pieces->size());
    for (std::string& piece : *pieces) {
      if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
      if (regex_ == nullptr) {
        out.push_back(BytesToUnicode(piece));
        continue;
      }
      std::string_view text(piece);
      for (const auto& [begin, end] : regex_->FindAll(text)) {
        out.push_back(BytesToUnicode(text.substr(begin, end - begin)));
      }
    }
    *pieces = std::move(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  void PreTokenize(std::vector<std::string>* pieces, bool first_section) const override {
    std::vector<std::string> out;
    for (size_t p = 0; p < pieces->size(); ++p) {
      std::string text;
      for (char c : (*pieces)[p]) {
        if (c == ' ') {
          text += replacement_;
        } else {
          text.push_back(c);
        }
      }
      const bool prepend = prepend_ == Prepend::kAlways ||
                           (prepend_ == Prepend::kFirst && first_section && p == 0);
      if (prepend && text.compare(0, replacement_.size(), replacement_) != 0) {
        text.insert(0, replacement_);
      }
      if (!split_) {
        if (!text.empty()) out.push_back(std::move(text));
        continue;
      }
      // Split before every replacement character (MergedWithNext).
      size_t start = 0;
      size_t hit = text.find(replacement_, 1);
      while (hit != std::string::npos) {
        out.push_back(text.substr(start, hit - start));
        start = hit;
        hit = text.find(replacement_, hit + replacement_.size());
      }
      if (start < text.size()) out.push_back(text.substr(start));
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool first_section) const override {
    for (const auto& part : parts_) part->PreTokenize(pieces, first_section);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

absl::StatusOr<std::unique_ptr<Regex>> CompileAt(const std::string& pattern,
                                                 const std::string& where,
                                                 std::string_view key) {
  auto regex = Regex::Compile(pattern);
  if (!regex.ok()) return FieldError(where, key, StatusMessage(regex.status()));
  return std::move(regex).value();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const nlohmann::json& j,
                                                                const std::string& where) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  PMOL_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "ByteLevel") {
    PMOL_ASSIGN_OR_RETURN(bool add_prefix_space, GetBoolOr(j, where, "add_prefix_space", true));
    PMOL_ASSIGN_OR_RETURN(bool use_regex, GetBoolOr(j, where, "use_regex", true));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      PMOL_ASSIGN_OR_RETURN(regex, CompileAt(kGpt2SplitPattern, where, "use_regex"));
    }
    return std::unique_ptr<PreTokenizer>(
        new ByteLevelPreTokenizer(add_prefix_space, std::move(regex)));
  }
  if (type == "Split") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* pattern, GetField(j, where, "pattern"));
    const std::string pattern_where = where + ".pattern";
    std::string source;
    if (pattern->is_object() && pattern->contains("String")) {
      PMOL_ASSIGN_OR_RETURN(std::string literal, GetString(*pattern, pattern_where, "String"));
      source = Regex::Escape(literal);
    } else {
      PMOL_ASSIGN_OR_RETURN(source, GetString(*pattern, pattern_where, "Regex"));
    }
    PMOL_ASSIGN_OR_RETURN(auto regex, CompileAt(source, pattern_where, "Regex"));
    PMOL_ASSIGN_OR_RETURN(std::string behavior_name, GetString(j, where, "behavior"));
    SplitBehavior behavior;
    if (behavior_name == "Isolated") {
      behavior = SplitBehavior::kIsolated;
    } else if (behavior_name == "Removed") {
      behavior = SplitBehavior::kRemoved;
    } else if (behavior_name == "MergedWithPrevious") {
      behavior = SplitBehavior::kMergedWithPrevious;
    } else if (behavior_name == "MergedWithNext") {
      behavior = SplitBehavior::kMergedWithNext;
    } else if (behavior_name == "Contiguous") {
      behavior = SplitBehavior::kContiguous;
    } else {
      return FieldError(where, "behavior", "unknown split behavior '" + behavior_name + "'");
    }
    PMOL_ASSIGN_OR_RETURN(bool invert, GetBoolOr(j, where, "invert", false));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(regex), behavior, invert));
  }
  if (type == "Metaspace") {
    PMOL_ASSIGN_OR_RETURN(std::string replacement,
                          GetStringOr(j, where, "replacement", "\xE2\x96\x81"));
    if (replacement.empty()) return FieldError(where, "replacement", "must not be empty");
    MetaspacePreTokenizer::Prepend prepend = MetaspacePreTokenizer::Prepend::kAlways;
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      PMOL_ASSIGN_OR_RETURN(std::string scheme, GetString(j, where, "prepend_scheme"));
      if (scheme == "always") {
        prepend = MetaspacePreTokenizer::Prepend::kAlways;
      } else if (scheme == "first") {
        prepend = MetaspacePreTokenizer::Prepend::kFirst;
      } else if (scheme == "never") {
        prepend = MetaspacePreTokenizer::Prepend::kNever;
      } else {
        return FieldError(where, "prepend_scheme", "expected always, first or never");
      }
    } else {
      PMOL_ASSIGN_OR_RETURN(bool add, GetBoolOr(j, where, "add_prefix_space", true));
      if (!add) prepend = MetaspacePreTokenizer::Prepend::kNever;
    }
    PMOL_ASSIGN_OR_RETURN(bool split, GetBoolOr(j, where, "split", true));
    return std::unique_ptr<PreTokenizer>(new MetaspacePreTokenizer(replacement, prepend, split));
  }
  if (type == "Digits") {
    PMOL_ASSIGN_OR_RETURN(bool individual, GetBoolOr(j, where, "individual_digits", false));
    PMOL_ASSIGN_OR_RETURN(auto regex,
                          CompileAt(individual ? "\\p{N}" : "\\p{N}+", where, "type"));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(regex), SplitBehavior::kIsolated, false));
  }
  if (type == "Whitespace") {
    PMOL_ASSIGN_OR_RETURN(auto regex, CompileAt("\\w+|[^\\w\\s]+", where, "type"));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(regex), SplitBehavior::kRemoved, true));
  }
  if (type == "WhitespaceSplit") {
    PMOL_ASSIGN_OR_RETURN(auto regex, CompileAt("\\s+", where, "type"));
    return std::unique_ptr<PreTokenizer>(
        new SplitPreTokenizer(std::move(regex), SplitBehavior::kRemoved, false));
  }
  if (type == "Sequence") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* list, GetField(j, where, "pretokenizers"));
    if (!list->is_array()) return FieldError(where, "pretokenizers", "expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      PMOL_ASSIGN_OR_RETURN(
          auto part,
          ParsePreTokenizer((*list)[i], absl::StrCat(where, ".pretokenizers[", i, "]")));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(parts)));
  }
  return FieldError(where, "type",
                    absl::StrCat("pre-tokenizer type '", type,
                                 "' is not supported (supported: ByteLevel, Split, Metaspace, "
                                 "Digits, Whitespace, WhitespaceSplit, Sequence)"));
}

}  // namespace pmol::data
