// Counter-based random numbers that every backend computes alike: the i-th output of
// SplitMix64 (Steele, Lea & Flood 2014; the generator java.util.SplittableRandom uses)
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

PMOL_HOST_DEVICE inline uint64_t SplitMix64At(uint64_t key, uint64_t index) {
  uint64_t z = key + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

PMOL_HOST_DEVICE inline double UniformAt(uint64_t key, uint64_t index) {
  return static_cast<double>(SplitMix64At(key, index) >> 11) * 0x1p-53;
}

}  // namespace pmol

#endif  // PMOL_KERNELS_RANDOM_BITS_H_
