// Truncation of a tokenized preference pair, identical for chosen and rejected:
//   1. prompt longer than max_prompt_length (> 0): kKeepEnd keeps the first
//      `protected_prefix` ids (the tokenizer's BOS etc.) and the last
//      max_prompt_length - protected_prefix ids; kKeepStart keeps the first
//      max_prompt_length ids;
//   2. budget = max_length - prompt length; if the longer response exceeds it, both
//      responses keep their first `budget` ids (when truncate_responses and
//      budget >= 1), else the pair is over-long.
#ifndef PMOL_DATA_TRUNCATION_H_
#define PMOL_DATA_TRUNCATION_H_

#include <cstdint>
#include <vector>

#include "pmol/data/data_options.h"

namespace pmol::data {

enum class TruncationResult { kUnchanged, kTruncated, kOverlong };

TruncationResult TruncatePair(const DataOptions& options, int32_t protected_prefix,
                              std::vector<int32_t>* prompt, std::vector<int32_t>* chosen,
                              std::vector<int32_t>* rejected);

}  // namespace pmol::data

#endif  // PMOL_DATA_TRUNCATION_H_
