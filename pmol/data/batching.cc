// Padding and packing of preference pairs into micro-batches (see batching.h).
#include "pmol/data/batching.h"

#include "kernels/check.h"

namespace pmol::data {
namespace {

void InitSequenceBatch(int32_t rows, int32_t seq_len, int32_t pad_id, SequenceBatch* b) {
  b->rows = rows;
  b->seq_len = seq_len;
  const size_t n = static_cast<size_t>(rows) * seq_len;
  b->input_ids.assign(n, pad_id);
  b->response_mask.assign(n, 0);
  b->attention_mask.assign(n, 0);
  b->position_ids.assign(n, 0);
  b->segment_ids.assign(n, -1);
}

// Writes prompt + response at [row, start) as segment `segment`.
void Place(const std::vector<int32_t>& prompt, const std::vector<int32_t>& response, int32_t row,
           int32_t start, int32_t segment, SequenceBatch* b) {
  const size_t base = static_cast<size_t>(row) * b->seq_len + start;
  const size_t length = prompt.size() + response.size();
  PMOL_CHECK(start + length <= static_cast<size_t>(b->seq_len));
  for (size_t t = 0; t < length; ++t) {
    const bool is_response = t >= prompt.size();
    b->input_ids[base + t] = is_response ? response[t - prompt.size()] : prompt[t];
    b->response_mask[base + t] = is_response ? 1 : 0;
    b->attention_mask[base + t] = 1;
    b->position_ids[base + t] = static_cast<int32_t>(t);
    b->segment_ids[base + t] = segment;
  }
}

}  // namespace

PreferenceBatch MakePaddedBatch(const PreferenceDataset& dataset,
                                const std::vector<int64_t>& pair_indices, int32_t rows,
                                int32_t seq_len, int32_t pad_id) {
  PMOL_CHECK(static_cast<int32_t>(pair_indices.size()) <= rows);
  PreferenceBatch batch;
  InitSequenceBatch(rows, seq_len, pad_id, &batch.chosen);
  InitSequenceBatch(rows, seq_len, pad_id, &batch.rejected);
  for (size_t i = 0; i < pair_indices.size(); ++i) {
    const TokenizedPair& p = dataset.pairs[pair_indices[i]];
    Place(p.prompt, p.chosen, static_cast<int32_t>(i), 0, 0, &batch.chosen);
    Place(p.prompt, p.rejected, static_cast<int32_t>(i), 0, 0, &batch.rejected);
    batch.preference.push_back(p.preference);
    batch.pair_row.push_back(static_cast<int32_t>(i));
    batch.pair_segment.push_back(0);
    batch.pair_index.push_back(pair_indices[i]);
  }
  batch.num_pairs = static_cast<int32_t>(pair_indices.size());
  return batch;
}

PreferenceBatcher::PreferenceBatcher(const PreferenceDataset& dataset, const DataOptions& options,
                                     Sampler* sampler, int32_t pad_id)
    : dataset_(dataset),
      rows_(options.micro_batch_size),
      seq_len_(options.max_length),
      packing_(options.packing),
      sampler_(sampler),
      pad_id_(pad_id) {}

PreferenceBatch PreferenceBatcher::Next() {
  if (!packing_) {
    std::vector<int64_t> indices;
    for (int32_t i = 0; i < rows_; ++i) indices.push_back(sampler_->Next());
    return MakePaddedBatch(dataset_, indices, rows_, seq_len_, pad_id_);
  }
  PreferenceBatch batch;
  InitSequenceBatch(rows_, seq_len_, pad_id_, &batch.chosen);
  InitSequenceBatch(rows_, seq_len_, pad_id_, &batch.rejected);
  std::vector<int32_t> used_chosen(rows_, 0), used_rejected(rows_, 0), segments(rows_, 0);
  while (true) {
    const int64_t index = sampler_->Peek();
    const TokenizedPair& p = dataset_.pairs[index];
    const int32_t chosen_len = static_cast<int32_t>(p.prompt.size() + p.chosen.size());
    const int32_t rejected_len = static_cast<int32_t>(p.prompt.size() + p.rejected.size());
    int32_t row = -1;
    for (int32_t r = 0; r < rows_ && row < 0; ++r) {
      if (used_chosen[r] + chosen_len <= seq_len_ && used_rejected[r] + rejected_len <= seq_len_) {
        row = r;
      }
    }
    if (row < 0) break;
    sampler_->Next();
    Place(p.prompt, p.chosen, row, used_chosen[row], segments[row], &batch.chosen);
    Place(p.prompt, p.rejected, row, used_rejected[row], segments[row], &batch.rejected);
    batch.preference.push_back(p.preference);
    batch.pair_row.push_back(row);
    batch.pair_segment.push_back(segments[row]);
    batch.pair_index.push_back(index);
    used_chosen[row] += chosen_len;
    used_rejected[row] += rejected_len;
    ++segments[row];
    ++batch.num_pairs;
  }
  return batch;
}

}  // namespace pmol::data
