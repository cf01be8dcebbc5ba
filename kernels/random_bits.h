// SplitMix64, the one copy in pmol (pmol/core/rng.cc seeds with it, pmol/data/shuffle.h
// orders data with it), and counter-based random numbers that every backend computes
// alike: the i-th output of SplitMix64 (Steele, Lea & Flood 2014; the generator java.util.SplittableRandom uses)
// started from `key`, computed directly from (key, i) with no state, so a GPU thread, a CPU
// thread or a test reproduces any element on its own:
//   z = key + (i + 1) * 0x9E3779B97F4A7C15            (mod 2^64)
//   z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//   z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//   bits = z ^ (z >> 31);   uniform = (bits >> 11) * 2^-53 in [0, 1)
#ifndef PMOL_KERNELS_RANDOM_BITS_H_
#define PMOL_KERNELS_RANDOM_BITS_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace pmol {

constexpr uint64_t kSplitMix64Gamma = 0x9E3779B97F4A7C15ull;

// SplitMix64's output for the state z (the generator adds kSplitMix64Gamma to its state,
// then outputs this).
PMOL_HOST_DEVICE inline uint64_t SplitMix64Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The (index + 1)-th output of SplitMix64 started from `key`.
PMOL_HOST_DEVICE inline uint64_t SplitMix64At(uint64_t key, uint64_t index) {
  return SplitMix64Mix(key + (index + 1) * kSplitMix64Gamma);
}

PMOL_HOST_DEVICE inline double UniformAt(uint64_t key, uint64_t index) {
  return static_cast<double>(SplitMix64At(key, index) >> 11) * 0x1p-53;
}

}  // namespace pmol

#endif  // PMOL_KERNELS_RANDOM_BITS_H_
