// Fixed-shape micro-batches of preference pairs, right-padded, optionally packed.
//
// Layout: `rows` x `seq_len` row-major int32 / uint8 arrays, one set for the chosen
// sequences (prompt + chosen reply) and one for the rejected ones.
//   input_ids       token ids; pad_id in padding
//   response_mask   1 where the token belongs to a reply (the positions whose
//                   log-probabilities DPO sums; the trainer scores token t from the
//                   logits at t - 1), else 0
//   attention_mask  1 on real tokens, 0 on padding
//   position_ids    0, 1, 2, ... restarting at every packed sequence
//   segment_ids     which sequence of the row a token belongs to (0, 1, ...), -1 on
//                   padding; attention must stay within a segment (block-diagonal)
// Padding (no packing): row i holds pair i; rows = micro_batch_size; a short last
// batch is padded with empty rows (num_pairs says how many are real).
// Packing: pairs are placed first-fit into the micro_batch_size rows, a pair going to
// the first row where both its chosen and its rejected sequence still fit (the same
// row and segment index in both arrays); the batch is closed when the next pair fits
// nowhere. pair_row / pair_segment locate each pair.
#ifndef PMOL_DATA_BATCHING_H_
#define PMOL_DATA_BATCHING_H_

#include <cstdint>
#include <vector>

#include "pmol/data/preference_dataset.h"
#include "pmol/data/sampler.h"

namespace pmol::data {

struct SequenceBatch {
  int32_t rows = 0;
  int32_t seq_len = 0;
  std::vector<int32_t> input_ids;
  std::vector<uint8_t> response_mask;
  std::vector<uint8_t> attention_mask;
  std::vector<int32_t> position_ids;
  std::vector<int32_t> segment_ids;
};

struct PreferenceBatch {
  SequenceBatch chosen;
  SequenceBatch rejected;
  int32_t num_pairs = 0;
  std::vector<int32_t> preference;     // per pair
  std::vector<int32_t> pair_row;       // per pair
  std::vector<int32_t> pair_segment;   // per pair
  std::vector<int64_t> pair_index;     // per pair: index into PreferenceDataset::pairs
};

// Pads the given pairs (at most `rows`, each fitting seq_len) into one batch.
PreferenceBatch MakePaddedBatch(const PreferenceDataset& dataset,
                                const std::vector<int64_t>& pair_indices, int32_t rows,
                                int32_t seq_len, int32_t pad_id);

// Draws pairs from a sampler and makes micro-batches (padded or packed per options).
// Its position is the sampler's state, so saving sampler().state() after a batch and
// restoring it resumes with the next batch exactly.
class PreferenceBatcher {
 public:
  PreferenceBatcher(const PreferenceDataset& dataset, const DataOptions& options,
                    Sampler* sampler, int32_t pad_id);
  PreferenceBatch Next();

 private:
  const PreferenceDataset& dataset_;
  int32_t rows_, seq_len_;
  bool packing_;
  Sampler* sampler_;
  int32_t pad_id_;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_BATCHING_H_
