// Normalizers of tokenizer.json (see normalizer.h).
#include "pmol/data/normalizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <vector>

#include "pmol/core/status.h"
#include "pmol/data/json_fields.h"
#include "pmol/data/regex.h"

namespace pmol::data {
namespace {

bool IsAscii(std::string_view text) {
  for (unsigned char c : text) {
    if (c >= 0x80) return false;
  }
  return true;
}

class UnicodeFormNormalizer : public Normalizer {
 public:
  explicit UnicodeFormNormalizer(std::string form) : form_(std::move(form)) {}
  std::string Normalize(std::string_view text) const override {
    return UnicodeNormalize(text, form_);
  }

 private:
  std::string form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string_view text) const override {
    if (IsAscii(text)) {
      std::string out(text);
      for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
      return out;
    }
    icu::UnicodeString u =
        icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), text.size()));
    u.toLower(icu::Locale::getRoot());
    std::string out;
    u.toUTF8String(out);
    return out;
  }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Normalize(std::string_view text) const override {
    if (text.empty()) return std::string();
    std::string out = prefix_;
    out.append(text);
    return out;
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> regex, std::string literal, std::string content)
      : regex_(std::move(regex)), literal_(std::move(literal)), content_(std::move(content)) {}
  std::string Normalize(std::string_view text) const override {
    std::string out;
    out.reserve(text.size() + text.size() / 4);
    if (regex_ == nullptr) {
      if (literal_.empty()) return std::string(text);
      size_t pos = 0;
      while (true) {
        const size_t hit = text.find(literal_, pos);
        if (hit == std::string_view::npos) break;
        out.append(text.substr(pos, hit - pos));
        out.append(content_);
        pos = hit + literal_.size();
      }
      out.append(text.substr(pos));
      return out;
    }
    size_t pos = 0;
    for (const auto& [begin, end] : regex_->FindAll(text)) {
      out.append(text.substr(pos, begin - pos));
      out.append(content_);
      pos = end;
    }
    out.append(text.substr(pos));
    return out;
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  std::string content_;
};


class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string_view text) const override {
    static const Regex* leading = Regex::Compile("^\\s+").value().release();
    static const Regex* trailing = Regex::Compile("\\s+$").value().release();
    if (left_) {
      auto m = leading->FindAll(text);
      if (!m.empty()) text.remove_prefix(m[0].second);
    }
    if (right_) {
      auto m = trailing->FindAll(text);
      if (!m.empty()) text = text.substr(0, m.back().first);
    }
    return std::string(text);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string Normalize(std::string_view text) const override {
    std::string current(text);
    for (const auto& part : parts_) current = part->Normalize(current);
    return current;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::string UnicodeNormalize(std::string_view text, std::string_view form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  if (form == "NFC") {
    if (IsAscii(text)) return std::string(text);
    normalizer = icu::Normalizer2::getNFCInstance(status);
  } else if (form == "NFD") {
    if (IsAscii(text)) return std::string(text);
    normalizer = icu::Normalizer2::getNFDInstance(status);
  } else if (form == "NFKC") {
    normalizer = icu::Normalizer2::getNFKCInstance(status);
  } else {
    normalizer = icu::Normalizer2::getNFKDInstance(status);
  }
  PMOL_CHECK(U_SUCCESS(status) && normalizer != nullptr);
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), text.size()));
  if (normalizer->isNormalized(u, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  icu::UnicodeString normalized = normalizer->normalize(u, status);
  PMOL_CHECK(U_SUCCESS(status));
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const nlohmann::json& j,
                                                            const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  PMOL_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return std::unique_ptr<Normalizer>(new UnicodeFormNormalizer(type));
  }
  if (type == "Lowercase") return std::unique_ptr<Normalizer>(new LowercaseNormalizer());
  if (type == "Prepend") {
    PMOL_ASSIGN_OR_RETURN(std::string prepend, GetString(j, where, "prepend"));
    return std::unique_ptr<Normalizer>(new PrependNormalizer(prepend));
  }
  if (type == "Strip") {
    PMOL_ASSIGN_OR_RETURN(bool left, GetBoolOr(j, where, "strip_left", true));
    PMOL_ASSIGN_OR_RETURN(bool right, GetBoolOr(j, where, "strip_right", true));
    return std::unique_ptr<Normalizer>(new StripNormalizer(left, right));
  }
  if (type == "Replace") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* pattern, GetField(j, where, "pattern"));
    PMOL_ASSIGN_OR_RETURN(std::string content, GetString(j, where, "content"));
    const std::string pattern_where = where + ".pattern";
    if (pattern->is_object() && pattern->contains("String")) {
      PMOL_ASSIGN_OR_RETURN(std::string literal, GetString(*pattern, pattern_where, "String"));
      return std::unique_ptr<Normalizer>(new ReplaceNormalizer(nullptr, literal, content));
    }
    PMOL_ASSIGN_OR_RETURN(std::string source, GetString(*pattern, pattern_where, "Regex"));
    auto regex = Regex::Compile(source);
    if (!regex.ok()) return FieldError(pattern_where, "Regex", StatusMessage(regex.status()));
    return std::unique_ptr<Normalizer>(
        new ReplaceNormalizer(std::move(regex).value(), "", content));
  }
  if (type == "Sequence") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* list, GetField(j, where, "normalizers"));
    if (!list->is_array()) return FieldError(where, "normalizers", "expected an array");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      PMOL_ASSIGN_OR_RETURN(
          auto part,
          ParseNormalizer((*list)[i], absl::StrCat(where, ".normalizers[", i, "]")));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  return FieldError(where, "type", absl::StrCat("normalizer type '", type,
                                                "' is not supported (supported: NFC, NFD, "
                                                "NFKC, NFKD, Lowercase, Prepend, Replace, "
                                                "Strip, Sequence)"));
}

}  // namespace pmol::data
