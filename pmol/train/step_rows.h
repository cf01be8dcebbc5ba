// The token rows of one preference step's forward, and where each sequence of the
// batch sits in them. Sequences q: the chosen sequences of the B pairs (q < B), then,
// unless SFT, the rejected ones (q = B + i).
//   Plain: one right-padded row per sequence, [sequences, T] (T = the batch's length).
//   Shared prompt: one row per pair, [common prefix | chosen rest | rejected rest],
//   T = the longest pair's c + r - p for sequence lengths c, r and a common prefix of
//   p tokens (the longest run of equal leading tokens within both prompts). In the row,
//   chosen token u sits at u; rejected token u at u (u < p) or u + c - p. The rejected
//   rest keeps its own positions u (RoPE) and has the key hole [p, c) (it does not
//   attend to the chosen rest), so each sequence sees exactly the context it has alone.
//   A prefix token has weight 2: it stands for a token of each sequence.
// The scored tokens (reply tokens after the first token) are listed sequence by
// sequence in token order in both layouts, each with the index of the token before it,
// whose hidden state predicts it.
#ifndef PMOL_TRAIN_STEP_ROWS_H_
#define PMOL_TRAIN_STEP_ROWS_H_

#include <cstdint>
#include <vector>

#include "pmol/data/batching.h"
#include "pmol/model/llama_model.h"

namespace pmol {

struct StepRows {
  int64_t count = 0, seq = 0, sequences = 0;
  std::vector<int32_t> ids;         // [N = count * seq]; 0 in padding
  std::vector<uint8_t> response;    // [N]: 1 where the token belongs to a reply
  std::vector<uint8_t> weight;      // [N]: how many sequences hold the token (0: padding)
  std::vector<int32_t> preference;  // per row
  std::vector<int64_t> last;        // per sequence: its last token's index in [N]
  // Scored tokens: the index in [N] of the token before, the token, its sequence.
  std::vector<int32_t> head_rows, head_targets, head_sequence;
  bool shared = false;
  TokenLayout layout;  // shared only: positions and key holes
};

// The shared layout when with_rejected && share_prompt, else the plain one.
StepRows MakeStepRows(const data::PreferenceBatch& batch, bool with_rejected, bool share_prompt);

}  // namespace pmol

#endif  // PMOL_TRAIN_STEP_ROWS_H_
