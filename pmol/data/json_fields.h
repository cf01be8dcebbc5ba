// Typed field access on parsed JSON (nlohmann::json) with errors that name where the
// field is: `where` is a path such as "tokenizer.json: model.merges[3]", and a
// failure reads "<where>.<key>: expected a string" and the like.
#ifndef PMOL_DATA_JSON_FIELDS_H_
#define PMOL_DATA_JSON_FIELDS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "pmol/data/absl_compat.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

inline absl::Status FieldError(std::string_view where, std::string_view key,
                               std::string_view what) {
  std::string message(where);
  if (!key.empty()) message.append(".").append(key);
  message.append(": ").append(what);
  return absl::InvalidArgumentError(message);
}

// The member `key` of object j, or an error when j is not an object or lacks it.
inline absl::StatusOr<const nlohmann::json*> GetField(const nlohmann::json& j,
                                                      std::string_view where,
                                                      std::string_view key) {
  if (!j.is_object()) return FieldError(where, "", "expected an object");
  auto it = j.find(std::string(key));
  if (it == j.end()) return FieldError(where, key, "missing");
  return &*it;
}

inline absl::StatusOr<std::string> GetString(const nlohmann::json& j, std::string_view where,
                                             std::string_view key) {
  auto field = GetField(j, where, key);
  if (!field.ok()) return field.status();
  if (!(*field)->is_string()) return FieldError(where, key, "expected a string");
  return (*field)->get<std::string>();
}

// Optional fields: the default when absent or null, an error when of another type.
inline absl::StatusOr<std::string> GetStringOr(const nlohmann::json& j,
                                               std::string_view where, std::string_view key,
                                               std::string fallback) {
  if (!j.is_object()) return FieldError(where, "", "expected an object");
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) return FieldError(where, key, "expected a string");
  return it->get<std::string>();
}

inline absl::StatusOr<bool> GetBoolOr(const nlohmann::json& j, std::string_view where,
                                      std::string_view key, bool fallback) {
  if (!j.is_object()) return FieldError(where, "", "expected an object");
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(where, key, "expected true or false");
  return it->get<bool>();
}

inline absl::StatusOr<long long> GetIntOr(const nlohmann::json& j, std::string_view where,
                                          std::string_view key, long long fallback) {
  if (!j.is_object()) return FieldError(where, "", "expected an object");
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return FieldError(where, key, "expected an integer");
  return it->get<long long>();
}

}  // namespace pmol::data

#endif  // PMOL_DATA_JSON_FIELDS_H_
