// Deterministic, platform-independent randomness for data order: SplitMix64 streams
// keyed by (seed, purpose, a, b) and a Fisher-Yates shuffle with unbiased bounded
// draws (Lemire's multiply-and-reject). Unlike std::shuffle and std distributions,
// the result is specified here, so an order depends only on the seed.
#ifndef PMOL_DATA_SHUFFLE_H_
#define PMOL_DATA_SHUFFLE_H_

#include <cstdint>
#include <vector>

#include "kernels/random_bits.h"

namespace pmol::data {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += kSplitMix64Gamma;
    return SplitMix64Mix(state_);
  }
  // Uniform in [0, bound), bound > 0.
  uint64_t Below(uint64_t bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (true) {
      const unsigned __int128 m = static_cast<unsigned __int128>(Next()) * bound;
      if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
    }
  }

 private:
  uint64_t state_;
};

// A stream seed for (seed, purpose, a, b).
inline uint64_t StreamSeed(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b) {
  SplitMix64 m(seed ^ (purpose * 0xD1B54A32D192ED03ull));
  uint64_t s = m.Next() ^ a;
  SplitMix64 m2(s);
  s = m2.Next() ^ b;
  SplitMix64 m3(s);
  return m3.Next();
}

template <typename T>
void Shuffle(std::vector<T>* v, uint64_t seed) {
  SplitMix64 rng(seed);
  for (size_t i = v->size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(rng.Below(i));
    std::swap((*v)[i - 1], (*v)[j]);
  }
}

}  // namespace pmol::data

#endif  // PMOL_DATA_SHUFFLE_H_
