// One JSONL line -> prompt / chosen / rejected text (see preference_parser.h).
#include "pmol/data/preference_parser.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/data/utf8.h"

namespace pmol::data {
namespace {

constexpr char kHhAssistant[] = "\n\nAssistant:";

ParseOutcome Fail(BadInputReason reason, std::string detail) {
  ParseOutcome out;
  out.reason = reason;
  out.detail = std::move(detail);
  return out;
}

bool IsBlank(const std::string& s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') return false;
  }
  return true;
}

// Reads a message list; false with *error on problems.
bool ReadMessages(const nlohmann::json& j, const std::string& field,
                  std::vector<ChatMessage>* out, std::string* error) {
  if (j.is_object()) {  // a single message
    return ReadMessages(nlohmann::json::array({j}), field, out, error);
  }
  if (!j.is_array()) {
    *error = "'" + field + "' must be a message or a list of messages";
    return false;
  }
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
        !m["role"].is_string() || !m["content"].is_string()) {
      *error = absl::StrCat("'", field, "'[", i, "] needs string 'role' and 'content'");
      return false;
    }
    out->push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return true;
}

}  // namespace

PreferenceParser::PreferenceParser(const DataOptions& options, const DataSourceOptions& source)
    : options_(options),
      source_(source),
      template_(ChatTemplate::Named(options.chat_template).value()) {}

ParseOutcome PreferenceParser::Parse(std::string_view line) const {
  size_t bad_offset = 0;
  if (!IsValidUtf8(line, &bad_offset)) {
    return Fail(BadInputReason::kInvalidUtf8, absl::StrCat("at byte ", bad_offset));
  }
  nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
  if (j.is_discarded()) return Fail(BadInputReason::kInvalidJson, "cannot parse the line");
  if (!j.is_object()) return Fail(BadInputReason::kInvalidJson, "the line is not a JSON object");

  ParseOutcome out;
  PreferenceText& t = out.text;

  // Preference: the source's tag, else the line's label.
  if (!source_.preference.empty()) {
    for (size_t i = 0; i < options_.preference_names.size(); ++i) {
      if (options_.preference_names[i] == source_.preference) t.preference = static_cast<int32_t>(i);
    }
  } else {
    auto it = j.find(options_.preference_field);
    if (it == j.end() && options_.unpaired) {
      t.preference = 0;
    } else if (it == j.end()) {
      return Fail(BadInputReason::kMissingField, "'" + options_.preference_field + "'");
    } else if (it->is_string()) {
      const std::string name = it->get<std::string>();
      for (size_t i = 0; i < options_.preference_names.size(); ++i) {
        if (options_.preference_names[i] == name) t.preference = static_cast<int32_t>(i);
      }
      if (t.preference < 0) return Fail(BadInputReason::kUnknownPreference, "'" + name + "'");
    } else if (it->is_number_integer()) {
      const long long index = it->get<long long>();
      if (index < 0 || index >= static_cast<long long>(options_.preference_names.size())) {
        return Fail(BadInputReason::kUnknownPreference, absl::StrCat("index ", index));
      }
      t.preference = static_cast<int32_t>(index);
    } else {
      return Fail(BadInputReason::kMissingField,
                  "'" + options_.preference_field + "' must be a name or an index");
    }
  }

  auto chosen_it = j.find(options_.chosen_field);
  auto rejected_it = j.find(options_.rejected_field);
  if (options_.unpaired) {
    // Supervised data: a whole conversation, or prompt + chosen; the reply is its own
    // (untrained) rejected copy.
    const auto messages_it = j.find("messages");
    if (chosen_it == j.end() && messages_it != j.end()) return ParseConversation(*messages_it, t);
    if (rejected_it == j.end()) rejected_it = chosen_it;
  }
  if (chosen_it == j.end()) return Fail(BadInputReason::kMissingField, "'" + options_.chosen_field + "'");
  if (rejected_it == j.end()) {
    return Fail(BadInputReason::kMissingField, "'" + options_.rejected_field + "'");
  }
  const auto prompt_it = j.find(options_.prompt_field);

  DataFormat format = source_.format;
  if (format == DataFormat::kAuto) {
    if (chosen_it->is_array() || chosen_it->is_object()) {
      format = DataFormat::kMessages;
    } else if (prompt_it == j.end() && chosen_it->is_string() &&
               chosen_it->get_ref<const std::string&>().find(kHhAssistant) != std::string::npos) {
      format = DataFormat::kHhRlhf;
    } else {
      format = DataFormat::kFields;
    }
  }

  switch (format) {
    case DataFormat::kFields: {
      if (prompt_it == j.end()) return Fail(BadInputReason::kMissingField, "'" + options_.prompt_field + "'");
      if (!prompt_it->is_string() || !chosen_it->is_string() || !rejected_it->is_string()) {
        return Fail(BadInputReason::kMissingField, "prompt, chosen and rejected must be strings");
      }
      t.prompt = prompt_it->get<std::string>();
      t.chosen = chosen_it->get<std::string>();
      t.rejected = rejected_it->get<std::string>();
      t.responses_need_eos = true;
      break;
    }
    case DataFormat::kHhRlhf: {
      if (!chosen_it->is_string() || !rejected_it->is_string()) {
        return Fail(BadInputReason::kMissingField, "chosen and rejected must be strings");
      }
      const std::string& chosen = chosen_it->get_ref<const std::string&>();
      const std::string& rejected = rejected_it->get_ref<const std::string&>();
      const size_t cut = chosen.rfind(kHhAssistant);
      if (cut == std::string::npos) {
        return Fail(BadInputReason::kMalformed, "chosen has no \"\\n\\nAssistant:\" turn");
      }
      const size_t prompt_len = cut + sizeof(kHhAssistant) - 1;
      if (rejected.compare(0, prompt_len, chosen, 0, prompt_len) != 0) {
        return Fail(BadInputReason::kMalformed,
                    "chosen and rejected do not share the prompt up to the last "
                    "\"\\n\\nAssistant:\"");
      }
      t.prompt = chosen.substr(0, prompt_len);
      t.chosen = chosen.substr(prompt_len);
      t.rejected = rejected.substr(prompt_len);
      t.responses_need_eos = true;
      break;
    }
    case DataFormat::kMessages:
    case DataFormat::kAuto: {
      std::vector<ChatMessage> prompt, chosen, rejected;
      std::string error;
      if (!ReadMessages(*chosen_it, options_.chosen_field, &chosen, &error) ||
          !ReadMessages(*rejected_it, options_.rejected_field, &rejected, &error)) {
        return Fail(BadInputReason::kMissingField, error);
      }
      if (prompt_it != j.end()) {
        if (!ReadMessages(*prompt_it, options_.prompt_field, &prompt, &error)) {
          return Fail(BadInputReason::kMissingField, error);
        }
      } else {
        // Full conversations: the shared prefix is the prompt.
        if (chosen.size() != rejected.size() || chosen.size() < 2) {
          return Fail(BadInputReason::kMalformed,
                      "chosen and rejected conversations must have the same turns before the "
                      "last assistant reply");
        }
        for (size_t i = 0; i + 1 < chosen.size(); ++i) {
          if (chosen[i].role != rejected[i].role || chosen[i].content != rejected[i].content) {
            return Fail(BadInputReason::kMalformed,
                        absl::StrCat("chosen and rejected differ at message ", i,
                                     ", before the last reply"));
          }
        }
        prompt.assign(chosen.begin(), chosen.end() - 1);
        chosen.erase(chosen.begin(), chosen.end() - 1);
        rejected.erase(rejected.begin(), rejected.end() - 1);
      }
      if (chosen.empty() || rejected.empty()) return Fail(BadInputReason::kEmptyResponse, "no reply");
      if (chosen.back().role != "assistant" || rejected.back().role != "assistant") {
        return Fail(BadInputReason::kMalformed, "the reply must be an assistant message");
      }
      // Replies with several messages: all but the last extend the prompt (they must
      // agree between chosen and rejected).
      if (chosen.size() != 1 || rejected.size() != 1) {
        return Fail(BadInputReason::kMalformed, "chosen and rejected must each be one reply");
      }
      auto rendered = template_.RenderPrompt(prompt);
      if (!rendered.ok()) return Fail(BadInputReason::kMalformed, std::string(rendered.status().message()));
      t.prompt = *rendered;
      if (IsBlank(chosen.back().content)) return Fail(BadInputReason::kEmptyResponse, "chosen");
      if (IsBlank(rejected.back().content)) return Fail(BadInputReason::kEmptyResponse, "rejected");
      t.chosen = template_.RenderReply(chosen.back().content);
      t.rejected = template_.RenderReply(rejected.back().content);
      t.responses_need_eos = template_.reply_needs_eos();
      break;
    }
  }
  if (IsBlank(t.chosen)) return Fail(BadInputReason::kEmptyResponse, "chosen");
  if (IsBlank(t.rejected)) return Fail(BadInputReason::kEmptyResponse, "rejected");
  if (t.chosen == t.rejected && !options_.unpaired) {
    return Fail(BadInputReason::kIdenticalResponses, "");
  }
  out.ok = true;
  return out;
}

ParseOutcome PreferenceParser::ParseConversation(const nlohmann::json& messages,
                                                 PreferenceText& t) const {
  std::vector<ChatMessage> conversation;
  std::string error;
  if (!ReadMessages(messages, "messages", &conversation, &error)) {
    return Fail(BadInputReason::kMissingField, error);
  }
  if (conversation.size() < 2 || conversation.back().role != "assistant") {
    return Fail(BadInputReason::kMalformed,
                "'messages' must end with an assistant reply after at least one message");
  }
  const ChatMessage reply = conversation.back();
  conversation.pop_back();
  auto rendered = template_.RenderPrompt(conversation);
  if (!rendered.ok()) return Fail(BadInputReason::kMalformed, std::string(rendered.status().message()));
  if (IsBlank(reply.content)) return Fail(BadInputReason::kEmptyResponse, "the assistant reply");
  ParseOutcome out;
  out.text = std::move(t);
  out.text.prompt = *rendered;
  out.text.chosen = template_.RenderReply(reply.content);
  out.text.rejected = out.text.chosen;
  out.text.responses_need_eos = template_.reply_needs_eos();
  out.ok = true;
  return out;
}

}  // namespace pmol::data
