// Decoders of tokenizer.json (see decoder.h).
#include "pmol/data/decoder.h"

#include "pmol/core/status.h"
#include "pmol/data/byte_level.h"
#include "pmol/data/json_fields.h"
#include "pmol/data/utf8.h"

namespace pmol::data {
namespace {

class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      if (!UnicodeToBytes(token, &bytes)) bytes += token;
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }
};

int ParseByteToken(const std::string& token) {
  // "<0xXX>" with two uppercase or lowercase hex digits.
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = token[k];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    int pending_count = 0;
    auto flush = [&]() {
      if (pending_count == 0) return;
      if (IsValidUtf8(pending)) {
        out.push_back(pending);
      } else {
        for (int k = 0; k < pending_count; ++k) out.push_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (std::string& token : *tokens) {
      const int byte = ParseByteToken(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    if (pattern_.empty()) return;
    for (std::string& token : *tokens) {
      std::string out;
      size_t pos = 0;
      while (true) {
        const size_t hit = token.find(pattern_, pos);
        if (hit == std::string::npos) break;
        out.append(token, pos, hit - pos);
        out += content_;
        pos = hit + pattern_.size();
      }
      out.append(token, pos, std::string::npos);
      token = std::move(out);
    }
  }

 private:
  std::string pattern_, content_;
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& t : *tokens) joined += t;
    tokens->assign(1, joined);
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      size_t begin = 0, end = token.size();
      for (int k = 0; k < start_ && token.compare(begin, content_.size(), content_) == 0 &&
                      begin < end;
           ++k) {
        begin += content_.size();
      }
      for (int k = 0; k < stop_ && end >= begin + content_.size() &&
                      token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++k) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& token = (*tokens)[i];
      std::string out;
      size_t pos = 0;
      while (true) {
        const size_t hit = token.find(replacement_, pos);
        if (hit == std::string::npos) break;
        out.append(token, pos, hit - pos);
        out.push_back(' ');
        pos = hit + replacement_.size();
      }
      out.append(token, pos, std::string::npos);
      if (i == 0 && strip_first_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
      token = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& part : parts_) part->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j,
                                                      const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Decoder>();
  PMOL_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Replace") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* pattern, GetField(j, where, "pattern"));
    PMOL_ASSIGN_OR_RETURN(std::string literal, GetString(*pattern, where + ".pattern", "String"));
    PMOL_ASSIGN_OR_RETURN(std::string content, GetString(j, where, "content"));
    return std::unique_ptr<Decoder>(new ReplaceDecoder(literal, content));
  }
  if (type == "Strip") {
    PMOL_ASSIGN_OR_RETURN(std::string content, GetString(j, where, "content"));
    PMOL_ASSIGN_OR_RETURN(long long start, GetIntOr(j, where, "start", 0));
    PMOL_ASSIGN_OR_RETURN(long long stop, GetIntOr(j, where, "stop", 0));
    if (content.empty()) return FieldError(where, "content", "must not be empty");
    return std::unique_ptr<Decoder>(
        new StripDecoder(content, static_cast<int>(start), static_cast<int>(stop)));
  }
  if (type == "Metaspace") {
    PMOL_ASSIGN_OR_RETURN(std::string replacement,
                          GetStringOr(j, where, "replacement", "\xE2\x96\x81"));
    bool strip = true;
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      PMOL_ASSIGN_OR_RETURN(std::string scheme, GetString(j, where, "prepend_scheme"));
      strip = scheme != "never";
    } else {
      PMOL_ASSIGN_OR_RETURN(strip, GetBoolOr(j, where, "add_prefix_space", true));
    }
    return std::unique_ptr<Decoder>(new MetaspaceDecoder(replacement, strip));
  }
  if (type == "Sequence") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* list, GetField(j, where, "decoders"));
    if (!list->is_array()) return FieldError(where, "decoders", "expected an array");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      PMOL_ASSIGN_OR_RETURN(auto part,
                            ParseDecoder((*list)[i], absl::StrCat(where, ".decoders[", i, "]")));
      if (part != nullptr) parts.push_back(std::move(part));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(parts)));
  }
  return FieldError(where, "type",
                    absl::StrCat("decoder type '", type,
                                 "' is not supported (supported: ByteLevel, ByteFallback, "
                                 "Replace, Fuse, Strip, Metaspace, Sequence)"));
}

}  // namespace pmol::data
