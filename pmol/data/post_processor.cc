// Post-processors of tokenizer.json (see post_processor.h).
#include "pmol/data/post_processor.h"

#include "pmol/core/status.h"
#include "pmol/data/json_fields.h"

namespace pmol::data {
namespace {

absl::Status ParseInto(const nlohmann::json& j, const std::string& where, PostProcessor* out) {
  if (j.is_null()) return absl::OkStatus();
  PMOL_ASSIGN_OR_RETURN(std::string type, GetString(j, where, "type"));
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "TemplateProcessing") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* single, GetField(j, where, "single"));
    if (!single->is_array()) return FieldError(where, "single", "expected an array");
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* specials, GetField(j, where, "special_tokens"));
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const std::string at = absl::StrCat(where, ".single[", i, "]");
      const nlohmann::json& item = (*single)[i];
      if (item.is_object() && item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      PMOL_ASSIGN_OR_RETURN(const nlohmann::json* special, GetField(item, at, "SpecialToken"));
      PMOL_ASSIGN_OR_RETURN(std::string name, GetString(*special, at + ".SpecialToken", "id"));
      PMOL_ASSIGN_OR_RETURN(const nlohmann::json* entry,
                            GetField(*specials, where + ".special_tokens", name));
      PMOL_ASSIGN_OR_RETURN(const nlohmann::json* ids,
                            GetField(*entry, where + ".special_tokens." + name, "ids"));
      if (!ids->is_array()) {
        return FieldError(where + ".special_tokens." + name, "ids", "expected an array");
      }
      for (const nlohmann::json& id : *ids) {
        if (!id.is_number_integer()) {
          return FieldError(where + ".special_tokens." + name, "ids", "expected integers");
        }
        (seen_sequence ? out->suffix : out->prefix).push_back(id.get<int32_t>());
      }
    }
    if (!seen_sequence) return FieldError(where, "single", "has no Sequence item");
    return absl::OkStatus();
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      PMOL_ASSIGN_OR_RETURN(const nlohmann::json* pair, GetField(j, where, key));
      if (!pair->is_array() || pair->size() != 2 || !(*pair)[1].is_number_integer()) {
        return FieldError(where, key, "expected [token, id]");
      }
      (std::string(key) == "cls" ? out->prefix : out->suffix).push_back((*pair)[1].get<int32_t>());
    }
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    PMOL_ASSIGN_OR_RETURN(const nlohmann::json* list, GetField(j, where, "processors"));
    if (!list->is_array()) return FieldError(where, "processors", "expected an array");
    for (size_t i = 0; i < list->size(); ++i) {
      // Each processor wraps the result of the previous one.
      PostProcessor inner;
      PMOL_RETURN_IF_ERROR(
          ParseInto((*list)[i], absl::StrCat(where, ".processors[", i, "]"), &inner));
      out->prefix.insert(out->prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      out->suffix.insert(out->suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
    return absl::OkStatus();
  }
  return FieldError(where, "type",
                    absl::StrCat("post-processor type '", type,
                                 "' is not supported (supported: TemplateProcessing, "
                                 "ByteLevel, RobertaProcessing, BertProcessing, Sequence)"));
}

}  // namespace

absl::StatusOr<PostProcessor> ParsePostProcessor(const nlohmann::json& j,
                                                 const std::string& where) {
  PostProcessor processor;
  PMOL_RETURN_IF_ERROR(ParseInto(j, where, &processor));
  return processor;
}

}  // namespace pmol::data
