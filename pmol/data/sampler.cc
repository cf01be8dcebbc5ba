// Mixed, sharded, resumable sampler (see sampler.h).
#include "pmol/data/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "pmol/data/shuffle.h"
#include "kernels/check.h"

namespace pmol::data {
namespace {

constexpr uint64_t kSourcePermutation = 1;
constexpr uint64_t kEpochShuffle = 2;

}  // namespace

Sampler::Sampler(std::vector<int64_t> source_sizes, std::vector<double> mix_weights,
                 int64_t samples_per_epoch, bool shuffle, uint64_t seed, int rank,
                 int world_size)
    : sizes_(std::move(source_sizes)), shuffle_(shuffle), seed_(seed), rank_(rank),
      world_size_(world_size) {
  PMOL_CHECK(sizes_.size() == mix_weights.size());
  PMOL_CHECK(world_size_ >= 1 && rank_ >= 0 && rank_ < world_size_);
  const size_t n = sizes_.size();
  offsets_.assign(n, 0);
  for (size_t s = 1; s < n; ++s) offsets_[s] = offsets_[s - 1] + sizes_[s - 1];
  const int64_t total = std::accumulate(sizes_.begin(), sizes_.end(), int64_t{0});
  epoch_size_ = samples_per_epoch > 0 ? samples_per_epoch : total;
  double weight_sum = 0.0;
  for (size_t s = 0; s < n; ++s) {
    if (sizes_[s] == 0) mix_weights[s] = 0.0;
    weight_sum += mix_weights[s];
  }
  per_epoch_.assign(n, 0);
  if (weight_sum <= 0.0 || total == 0) {
    epoch_size_ = 0;
    return;
  }
  // Largest remainder: floor shares, then +1 to the largest fractional parts (ties to
  // the lower source index).
  std::vector<std::pair<double, size_t>> remainders;
  int64_t assigned = 0;
  for (size_t s = 0; s < n; ++s) {
    const double exact = static_cast<double>(epoch_size_) * mix_weights[s] / weight_sum;
    per_epoch_[s] = static_cast<int64_t>(std::floor(exact));
    assigned += per_epoch_[s];
    if (mix_weights[s] > 0.0) remainders.push_back({exact - std::floor(exact), s});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t k = 0; assigned < epoch_size_ && k < remainders.size(); ++k, ++assigned) {
    ++per_epoch_[remainders[k].second];
  }
}

std::vector<int64_t> Sampler::EpochOrder(int64_t epoch) const {
  std::vector<int64_t> order;
  order.reserve(epoch_size_);
  for (size_t s = 0; s < sizes_.size(); ++s) {
    const int64_t size = sizes_[s], count = per_epoch_[s];
    if (count == 0) continue;
    int64_t position = epoch * count;  // position in the source's endless stream
    int64_t cached_round = -1;
    std::vector<int64_t> permutation;
    for (int64_t k = 0; k < count; ++k, ++position) {
      const int64_t round = position / size;
      if (round != cached_round) {
        permutation.resize(size);
        std::iota(permutation.begin(), permutation.end(), int64_t{0});
        if (shuffle_) Shuffle(&permutation, StreamSeed(seed_, kSourcePermutation, s, round));
        cached_round = round;
      }
      order.push_back(offsets_[s] + permutation[position % size]);
    }
  }
  if (shuffle_) Shuffle(&order, StreamSeed(seed_, kEpochShuffle, epoch, 0));
  return order;
}

void Sampler::EnsureEpoch() {
  PMOL_CHECK(steps_per_epoch() > 0);
  if (state_.consumed >= steps_per_epoch() * world_size_) {
    ++state_.epoch;
    state_.consumed = 0;
  }
  if (cached_epoch_ != state_.epoch) {
    order_ = EpochOrder(state_.epoch);
    cached_epoch_ = state_.epoch;
  }
}

int64_t Sampler::Peek() {
  EnsureEpoch();
  return order_[state_.consumed + rank_];
}

int64_t Sampler::Next() {
  const int64_t id = Peek();
  state_.consumed += world_size_;
  return id;
}

absl::Status Sampler::Restore(const SamplerState& state) {
  if (state.epoch < 0 || state.consumed < 0 || state.consumed % world_size_ != 0 ||
      state.consumed > steps_per_epoch() * world_size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampler state (epoch ", state.epoch, ", consumed ", state.consumed,
        ") does not fit this run (", world_size_, " ranks, ", steps_per_epoch(),
        " steps per epoch)"));
  }
  state_ = state;
  return absl::OkStatus();
}

}  // namespace pmol::data
