// A small byte-level BPE trainer that writes a valid Hugging Face tokenizer.json.
//
// Algorithm (the classic one of Sennrich et al. / GPT-2):
//   1. split each text with the GPT-2 pattern (pre_tokenizer.h) and count the pieces;
//   2. start from the 256 byte tokens (id = byte value, spelled with the byte-level
//      alphabet of byte_level.h);
//   3. repeat: count adjacent symbol pairs over all pieces, weighted by piece count;
//      merge the most frequent pair (ties: the smaller (left id, right id)) in every
//      piece; record the merge and, if its string is new, a token with the next id;
//      stop at vocab_size (special tokens included) or when no pair occurs
//      min_frequency times.
// The special tokens get the ids after the learned vocabulary, as added tokens.
// The output is deterministic for the same texts and options.
#ifndef PMOL_DATA_BPE_TRAINER_H_
#define PMOL_DATA_BPE_TRAINER_H_

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace pmol::data {

struct BpeTrainerOptions {
  int vocab_size = 1024;  // including the 256 byte tokens and the special tokens
  int min_frequency = 2;
  std::vector<std::string> special_tokens;
};

// Returns the tokenizer.json document (ByteLevel pre-tokenizer with the GPT-2 regex,
// BPE model, ByteLevel post-processor and decoder).
nlohmann::json TrainByteLevelBpe(const std::vector<std::string>& texts,
                                 const BpeTrainerOptions& options);

}  // namespace pmol::data

#endif  // PMOL_DATA_BPE_TRAINER_H_
