// Named chat templates that render message lists ({role, content}, roles system /
// user / assistant) into the prompt text and the response text of a training pair.
// The prompt ends with the template's generation prompt (the header of an assistant
// turn); the response is the reply plus the template's end-of-turn marker, so that
// the model learns to end its turn.
//
//   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" per turn;
//           generation prompt "<|im_start|>assistant\n"; reply "{content}<|im_end|>"
//   llama3  "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>";
//           generation prompt "<|start_header_id|>assistant<|end_header_id|>\n\n";
//           reply "{content}<|eot_id|>"  (BOS comes from the tokenizer)
//   llama2  "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]" (system folded into
//           the first user turn); earlier replies " {content} </s><s>[INST] ..."; the
//           reply " {content} </s>"  (the first <s> comes from the tokenizer)
//   plain   "System: {c}\n\n", "User: {c}\n\n", "Assistant: {c}\n\n"; generation
//           prompt "Assistant:"; reply " {content}" (+ the tokenizer's EOS)
// Contents are inserted verbatim (llama2 strips surrounding spaces, as its reference
// template does).
#ifndef PMOL_DATA_CHAT_TEMPLATE_H_
#define PMOL_DATA_CHAT_TEMPLATE_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pmol::data {

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  static absl::StatusOr<ChatTemplate> Named(std::string_view name);

  // The conversation so far (must not end with an assistant turn) followed by the
  // generation prompt. Errors name the offending message (unknown role, ...).
  absl::StatusOr<std::string> RenderPrompt(const std::vector<ChatMessage>& messages) const;
  // The assistant reply as it follows the generation prompt.
  std::string RenderReply(std::string_view content) const;
  // True when the reply has no end marker of its own, so the tokenizer's EOS ends it.
  bool reply_needs_eos() const { return kind_ == Kind::kPlain; }
  const std::string& name() const { return name_; }

 private:
  enum class Kind { kChatml, kLlama2, kLlama3, kPlain };
  ChatTemplate(Kind kind, std::string name) : kind_(kind), name_(std::move(name)) {}
  Kind kind_;
  std::string name_;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_CHAT_TEMPLATE_H_
