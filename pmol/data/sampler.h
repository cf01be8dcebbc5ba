// Deterministic shuffled sampler over several sources with mix weights, sharded by
// data-parallel rank, resumable from a saved position.
//
// Epoch e (of length N = samples_per_epoch, or the total size when 0):
//   * source s contributes n_s = its share of N by mix weight (largest-remainder
//     rounding of N * w_s / sum w, so the n_s add up to N);
//   * source s reads its items from an endless stream: permutation 0 of its items,
//     then permutation 1, ... (each a seeded shuffle; identity order when shuffle is
//     off); epoch e takes stream positions [e * n_s, (e + 1) * n_s), so down-sampled
//     sources show different items in different epochs and up-sampled ones repeat;
//   * the N items are concatenated and shuffled with the epoch's seed.
// Sharding: rank r of W takes epoch items r, r + W, r + 2W, ... for floor(N / W)
// steps, so every rank takes the same number of steps (the last N mod W are dropped).
// State: (epoch, consumed), consumed = global items consumed in the epoch
// (= steps * W); Restore(state) continues exactly where that state was taken.
#ifndef PMOL_DATA_SAMPLER_H_
#define PMOL_DATA_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace pmol::data {

struct SamplerState {
  int64_t epoch = 0;
  int64_t consumed = 0;
};

class Sampler {
 public:
  // source_sizes[s] items in source s; global item ids are offsets into the
  // concatenation of the sources. Sources of size 0 get weight 0.
  Sampler(std::vector<int64_t> source_sizes, std::vector<double> mix_weights,
          int64_t samples_per_epoch, bool shuffle, uint64_t seed, int rank, int world_size);

  // The next global item id for this rank (moves to the next epoch at the end of one).
  int64_t Next();
  // The id Next() would return, without consuming it.
  int64_t Peek();

  SamplerState state() const { return state_; }
  // Error when the position does not fit this sampler (e.g. another world size).
  absl::Status Restore(const SamplerState& state);

  int64_t epoch_size() const { return epoch_size_; }
  int64_t steps_per_epoch() const { return epoch_size_ / world_size_; }
  // The whole epoch order (all ranks), for tests and analysis.
  std::vector<int64_t> EpochOrder(int64_t epoch) const;

 private:
  void EnsureEpoch();
  std::vector<int64_t> sizes_;
  std::vector<int64_t> offsets_;
  std::vector<int64_t> per_epoch_;  // n_s
  int64_t epoch_size_ = 0;
  bool shuffle_;
  uint64_t seed_;
  int rank_, world_size_;
  SamplerState state_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace pmol::data

#endif  // PMOL_DATA_SAMPLER_H_
