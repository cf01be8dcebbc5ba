// Tokenizer: loading tokenizer.json and the encode / decode pipelines (see tokenizer.h).
#include "pmol/data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"
#include "pmol/data/json_fields.h"
#include "pmol/data/utf8.h"

namespace pmol::data {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return buffer.str();
}

// A token name in tokenizer_config.json: a string or {"content": string}.
std::optional<std::string> ConfigTokenName(const nlohmann::json& config, const char* key) {
  if (!config.is_object()) return std::nullopt;
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::filesystem::path file(path);
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "tokenizer.json";
  PMOL_ASSIGN_OR_RETURN(std::string text, ReadFile(file.string()));
  nlohmann::json tokenizer = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (tokenizer.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(file.string(), ": not valid JSON"));
  }
  nlohmann::json config;
  const std::filesystem::path config_file = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config_file, ec)) {
    PMOL_ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_file.string()));
    config = nlohmann::json::parse(config_text, nullptr, false);
    if (config.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(config_file.string(), ": not valid JSON"));
    }
  }
  return FromJson(tokenizer, config, file.string());
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(const nlohmann::json& j,
                                                               const nlohmann::json& config,
                                                               const std::string& name) {
  auto tok = std::unique_ptr<Tokenizer>(new Tokenizer());
  tok->name_ = name;
  const std::string where = name + ":";
  if (!j.is_object()) return FieldError(name, "", "expected a JSON object");
  auto field = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json kNull;
    auto it = j.find(key);
    return it == j.end() ? kNull : *it;
  };
  PMOL_ASSIGN_OR_RETURN(tok->normalizer_, ParseNormalizer(field("normalizer"), where + " normalizer"));
  PMOL_ASSIGN_OR_RETURN(tok->pre_tokenizer_,
                        ParsePreTokenizer(field("pre_tokenizer"), where + " pre_tokenizer"));
  PMOL_ASSIGN_OR_RETURN(const nlohmann::json* model, GetField(j, name + ":", "model"));
  PMOL_ASSIGN_OR_RETURN(tok->model_, BpeModel::FromJson(*model, where + " model"));
  PMOL_ASSIGN_OR_RETURN(tok->added_,
                        AddedVocabulary::FromJson(field("added_tokens"), where + " added_tokens"));
  PMOL_ASSIGN_OR_RETURN(tok->post_processor_,
                        ParsePostProcessor(field("post_processor"), where + " post_processor"));
  PMOL_ASSIGN_OR_RETURN(tok->decoder_, ParseDecoder(field("decoder"), where + " decoder"));

  tok->vocab_size_ = tok->model_->vocab_size();
  for (const AddedToken& t : tok->added_.tokens()) {
    tok->vocab_size_ = std::max(tok->vocab_size_, t.id + 1);
  }
  for (int32_t id : tok->post_processor_.prefix) {
    if (!tok->IdToToken(id).has_value()) {
      return FieldError(where + " post_processor", "special_tokens",
                        absl::StrCat("id ", id, " is not in the vocabulary"));
    }
  }

  auto resolve = [&](const char* config_key,
                     std::initializer_list<const char*> names) -> std::optional<int32_t> {
    if (auto n = ConfigTokenName(config, config_key); n.has_value()) return tok->TokenToId(*n);
    for (const char* n : names) {
      if (auto id = tok->TokenToId(n); id.has_value()) return id;
    }
    return std::nullopt;
  };
  tok->bos_id_ = resolve("bos_token", {});
  if (!tok->bos_id_.has_value() && !tok->post_processor_.prefix.empty()) {
    tok->bos_id_ = tok->post_processor_.prefix.front();
  }
  if (!tok->bos_id_.has_value()) tok->bos_id_ = resolve("", {"<s>", "<|begin_of_text|>"});
  tok->eos_id_ = resolve("eos_token", {});
  if (!tok->eos_id_.has_value() && !tok->post_processor_.suffix.empty()) {
    tok->eos_id_ = tok->post_processor_.suffix.back();
  }
  if (!tok->eos_id_.has_value()) {
    tok->eos_id_ = resolve("", {"</s>", "<|end_of_text|>", "<|endoftext|>"});
  }
  tok->pad_id_ = resolve("pad_token", {"<pad>", "<|pad|>"});
  return tok;
}

void Tokenizer::EncodeSection(std::string_view text, bool first_section,
                              std::vector<int32_t>* ids) const {
  std::vector<std::string> pieces;
  pieces.emplace_back(text);
  if (pre_tokenizer_ != nullptr) pre_tokenizer_->PreTokenize(&pieces, first_section);
  for (const std::string& piece : pieces) model_->Encode(piece, ids);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!IsValidUtf8(text)) {
    repaired = Utf8Lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  bool first = true;
  for (const TextSection& raw : added_.Split(text, /*normalized=*/false)) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      first = false;
      continue;
    }
    std::string normalized =
        normalizer_ != nullptr ? normalizer_->Normalize(raw.text) : std::string(raw.text);
    if (!added_.has_normalized_tokens()) {
      EncodeSection(normalized, first, &ids);
      first = false;
      continue;
    }
    for (const TextSection& section : added_.Split(normalized, /*normalized=*/true)) {
      if (section.id >= 0) {
        ids.push_back(section.id);
      } else {
        EncodeSection(section.text, first, &ids);
      }
      first = false;
    }
  }
  if (add_special_tokens) post_processor_.Apply(&ids);
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* added = added_.FindById(id); added != nullptr) {
      if (skip_special_tokens && added->special) continue;
      tokens.push_back(added->content);
      continue;
    }
    if (const std::string* token = model_->IdToToken(id); token != nullptr) {
      tokens.push_back(*token);
    }
  }
  if (decoder_ != nullptr) decoder_->DecodeChain(&tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const AddedToken* added = added_.FindByContent(token); added != nullptr) return added->id;
  return model_->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = added_.FindById(id); added != nullptr) return added->content;
  if (const std::string* token = model_->IdToToken(id); token != nullptr) return *token;
  return std::nullopt;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const AddedToken* added = added_.FindById(id);
  return added != nullptr && added->special;
}

}  // namespace pmol::data
