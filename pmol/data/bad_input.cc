// Bad-input counting and summary (see bad_input.h).
#include "pmol/data/bad_input.h"

#include "absl/strings/str_cat.h"

namespace pmol::data {

const char* BadInputReasonName(BadInputReason reason) {
  switch (reason) {
    case BadInputReason::kInvalidUtf8: return "invalid UTF-8";
    case BadInputReason::kInvalidJson: return "invalid JSON";
    case BadInputReason::kMissingField: return "missing field";
    case BadInputReason::kEmptyResponse: return "empty response";
    case BadInputReason::kIdenticalResponses: return "identical chosen and rejected";
    case BadInputReason::kUnknownPreference: return "unknown preference";
    case BadInputReason::kOverlong: return "over-long";
    case BadInputReason::kMalformed: return "malformed";
  }
  return "unknown";
}

std::string FormatBadInput(const std::string& file, int64_t line, BadInputReason reason,
                           const std::string& detail) {
  return absl::StrCat(file, ":", line, ": ", BadInputReasonName(reason),
                      detail.empty() ? "" : ": ", detail);
}

void BadInputReport::Record(const std::string& file, int64_t line, BadInputReason reason,
                            const std::string& detail) {
  ++total_;
  ++counts_[{file, reason}];
  first_.try_emplace(reason, FormatBadInput(file, line, reason, detail));
}

int64_t BadInputReport::count(BadInputReason reason) const {
  int64_t n = 0;
  for (const auto& [key, c] : counts_) {
    if (key.second == reason) n += c;
  }
  return n;
}

std::string BadInputReport::first_message(BadInputReason reason) const {
  auto it = first_.find(reason);
  return it == first_.end() ? "" : it->second;
}

std::string BadInputReport::Summary(int64_t kept) const {
  if (total_ == 0) return absl::StrCat("data: kept all ", kept, " pairs, skipped none\n");
  std::string out = absl::StrCat("data: kept ", kept, " pairs, skipped ", total_, ":\n");
  for (const auto& [key, c] : counts_) {
    absl::StrAppend(&out, "  ", key.first, ": ", c, " ", BadInputReasonName(key.second), "\n");
  }
  for (const auto& [reason, message] : first_) {
    absl::StrAppend(&out, "  first ", BadInputReasonName(reason), ": ", message, "\n");
  }
  return out;
}

}  // namespace pmol::data
