// Pair truncation (see truncation.h).
#include "pmol/data/truncation.h"

#include <algorithm>

namespace pmol::data {

TruncationResult TruncatePair(const DataOptions& options, int32_t protected_prefix,
                              std::vector<int32_t>* prompt, std::vector<int32_t>* chosen,
                              std::vector<int32_t>* rejected) {
  bool truncated = false;
  const int64_t max_prompt = options.max_prompt_length;
  if (max_prompt > 0 && static_cast<int64_t>(prompt->size()) > max_prompt) {
    truncated = true;
    if (options.prompt_truncation == PromptTruncation::kKeepStart) {
      prompt->resize(max_prompt);
    } else {
      const int64_t head = std::min<int64_t>(protected_prefix, max_prompt);
      const int64_t tail = max_prompt - head;
      std::vector<int32_t> kept(prompt->begin(), prompt->begin() + head);
      kept.insert(kept.end(), prompt->end() - tail, prompt->end());
      *prompt = std::move(kept);
    }
  }
  const int64_t budget = options.max_length - static_cast<int64_t>(prompt->size());
  const int64_t longer = std::max(chosen->size(), rejected->size());
  if (longer > budget) {
    if (!options.truncate_responses || budget < 1) return TruncationResult::kOverlong;
    truncated = true;
    if (static_cast<int64_t>(chosen->size()) > budget) chosen->resize(budget);
    if (static_cast<int64_t>(rejected->size()) > budget) rejected->resize(budget);
  }
  return truncated ? TruncationResult::kTruncated : TruncationResult::kUnchanged;
}

}  // namespace pmol::data
