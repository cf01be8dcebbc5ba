// Named chat templates (see chat_template.h).
#include "pmol/data/chat_template.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "pmol/data/absl_compat.h"

namespace pmol::data {
namespace {

std::string Strip(std::string_view s) {
  return std::string(absl::StripAsciiWhitespace(AsAbsl(s)));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Named(std::string_view name) {
  if (name == "chatml") return ChatTemplate(Kind::kChatml, "chatml");
  if (name == "llama2") return ChatTemplate(Kind::kLlama2, "llama2");
  if (name == "llama3") return ChatTemplate(Kind::kLlama3, "llama3");
  if (name == "plain") return ChatTemplate(Kind::kPlain, "plain");
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template '", std::string(name),
                                                 "' (chatml, llama2, llama3, plain)"));
}

absl::StatusOr<std::string> ChatTemplate::RenderPrompt(
    const std::vector<ChatMessage>& messages) const {
  if (messages.empty()) return absl::InvalidArgumentError("the prompt has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", i, ": unknown role '", role, "' (system, user, assistant)"));
    }
    if (role == "system" && i != 0) {
      return absl::InvalidArgumentError(absl::StrCat("message ", i, ": system must come first"));
    }
  }
  if (messages.back().role == "assistant") {
    return absl::InvalidArgumentError("the prompt must not end with an assistant message");
  }
  std::string out;
  switch (kind_) {
    case Kind::kChatml:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      }
      out += "<|im_start|>assistant\n";
      break;
    case Kind::kLlama3:
      for (const ChatMessage& m : messages) {
        absl::StrAppend(&out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", m.content,
                        "<|eot_id|>");
      }
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case Kind::kLlama2: {
      std::string system;
      size_t i = 0;
      if (messages[0].role == "system") {
        system = "<<SYS>>\n" + Strip(messages[0].content) + "\n<</SYS>>\n\n";
        i = 1;
      }
      bool first_user = true;
      for (; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "user") {
          if (!first_user) out += "<s>";
          absl::StrAppend(&out, "[INST] ", first_user ? system : "", Strip(m.content), " [/INST]");
          first_user = false;
        } else {
          absl::StrAppend(&out, RenderReply(m.content));
        }
      }
      break;
    }
    case Kind::kPlain:
      for (const ChatMessage& m : messages) {
        const char* role = m.role == "system" ? "System" : m.role == "user" ? "User" : "Assistant";
        absl::StrAppend(&out, role, ": ", m.content, "\n\n");
      }
      out += "Assistant:";
      break;
  }
  return out;
}

std::string ChatTemplate::RenderReply(std::string_view content) const {
  switch (kind_) {
    case Kind::kChatml:
      return absl::StrCat(AsAbsl(content), "<|im_end|>");
    case Kind::kLlama3:
      return absl::StrCat(AsAbsl(content), "<|eot_id|>");
    case Kind::kLlama2:
      return absl::StrCat(" ", Strip(content), " </s>");
    case Kind::kPlain:
      return absl::StrCat(" ", AsAbsl(content));
  }
  return std::string(content);
}

}  // namespace pmol::data
