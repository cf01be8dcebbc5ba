// Reads one JSONL line of a preference file into text: prompt, chosen reply,
// rejected reply and preference index, for the formats described in data_options.h
// (fields, hh_rlhf, messages, auto). A line that cannot be used yields a
// BadInputReason and a detail message instead (the caller adds file and line).
#ifndef PMOL_DATA_PREFERENCE_PARSER_H_
#define PMOL_DATA_PREFERENCE_PARSER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "pmol/data/bad_input.h"
#include "pmol/data/chat_template.h"
#include "pmol/data/data_options.h"

namespace pmol::data {

struct PreferenceText {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  int32_t preference = -1;
  bool responses_need_eos = true;  // false when the chat template ends replies itself
};

struct ParseOutcome {
  bool ok = false;
  PreferenceText text;
  BadInputReason reason = BadInputReason::kMalformed;
  std::string detail;
};

class PreferenceParser {
 public:
  // `options` must be valid (ValidateDataOptions) and outlive the parser.
  PreferenceParser(const DataOptions& options, const DataSourceOptions& source);
  ParseOutcome Parse(std::string_view line) const;

 private:
  // options.unpaired: a {"messages": [...]} conversation ending with the reply.
  ParseOutcome ParseConversation(const nlohmann::json& messages, PreferenceText& t) const;

  const DataOptions& options_;
  const DataSourceOptions& source_;
  ChatTemplate template_;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_PREFERENCE_PARSER_H_
