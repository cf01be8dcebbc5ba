// Deterministic random numbers: SplitMix64 to seed, xoshiro256** to generate.
// Streams are derived from (seed, name) so a tensor's initial values depend only on the
// seed and the tensor's name, not on the order tensors are created in.
//   Uniform(): 53 random bits -> [0, 1);  Normal(): Box-Muller on two uniforms.
#ifndef PMOL_CORE_RNG_H_
#define PMOL_CORE_RNG_H_

#include <cstdint>
#include <string_view>

namespace pmol {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  // An independent stream for `name` under this seed.
  static Rng ForStream(uint64_t seed, std::string_view name);

  uint64_t NextU64();
  double Uniform();  // [0, 1)
  double Normal();   // mean 0, variance 1

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace pmol

#endif  // PMOL_CORE_RNG_H_
