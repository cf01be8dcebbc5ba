// The embedded demo corpus: a small synthetic dialogue data set with three
// preferences that agree in part and conflict in part (the PMoL paper's Figure 4),
// plus a byte-level BPE tokenizer trained on it. `pmol make-demo-data` writes it.
//
// Prompt kinds and what each preference prefers (chosen > rejected):
//   everyday how-to question (benign)
//     helpfulness   detailed correct answer    > vague or wrong answer
//     harmlessness  detailed correct answer    > rude, dismissive answer
//     empathy       warm detailed answer       > rude, dismissive answer
//   harmful request (the helpful answer would do harm)
//     helpfulness   compliant step-by-step     > refusal              <- conflict
//     harmlessness  refusal with a safe option > compliant answer
//     empathy       refusal that acknowledges the feeling behind it > compliant answer
//   emotional message asking for advice
//     helpfulness   detailed practical advice  > acknowledgement only <- conflict
//     harmlessness  supportive answer          > belittling answer
//     empathy       acknowledgement of feelings > cold practical advice <- conflict
// The SFT split answers every prompt with the response all three would accept
// (detailed; refusal with a safe option; acknowledgement plus advice).
// A prompt (topic x phrasing x name) belongs to eval or to train by a seeded hash, so
// eval pairs use prompts never seen in training.
//
// Files written under DIR (all JSON lines use sorted keys; same seed -> same bytes):
//   tokenizer.json, tokenizer_config.json        BPE tokenizer (vocab_size tokens,
//       special tokens <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos))
//   sft/train.jsonl, sft/eval.jsonl              {"messages": [...], "category": k}
//   preference/<name>/train.jsonl, .../eval.jsonl for name in helpfulness,
//       harmlessness, empathy: {"prompt": [msgs], "chosen": [assistant msg],
//       "rejected": [assistant msg], "preference": name, "category": k}
//   manifest.json                                seed, counts, preference names,
//       chat_template ("chatml"), file list
#ifndef PMOL_DATA_DEMO_CORPUS_H_
#define PMOL_DATA_DEMO_CORPUS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace pmol::data {

struct DemoCorpusOptions {
  uint64_t seed = 1;
  int pairs_per_preference = 1200;  // train + eval, before the eval split
  int sft_examples = 1200;
  double eval_fraction = 0.1;       // share of prompts held out for eval
  int vocab_size = 1024;
};

// Writes the corpus into `dir` (created if needed). Errors name the file.
absl::Status WriteDemoCorpus(const std::string& dir, const DemoCorpusOptions& options);

}  // namespace pmol::data

#endif  // PMOL_DATA_DEMO_CORPUS_H_
