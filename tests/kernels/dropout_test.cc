// Backend::DropoutKeep on the CPU:
//  - every element against SplitMix64 written here from its published definition (Steele,
//    Lea & Flood 2014: state += 0x9E3779B97F4A7C15, then the two xor-shift-multiplies),
//    run as a sequential generator, so element i is its (i+1)-th output: bit for bit in
//    f32, f64 and bf16 (a 0/1 mask), and nothing written past n;
//  - the statistics of the mask for p = 0.05, 0.1 and 0.5 over 10^6 elements: the dropped
//    fraction within 5 binomial standard deviations of p (sqrt(p(1-p)/n) <= 5e-4; a wrong
//    comparison such as u <= 1 - p shows at once), and neighbouring elements independent:
//    the fraction of adjacent dropped pairs within 5 standard deviations of p^2;
//  - different keys give different masks, and any thread count the same bits.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

// SplitMix64 as a stateful generator (its reference form).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// The mask the definition gives: 0 where the uniform (53 high bits) is below p, else 1.
std::vector<double> ReferenceMask(uint64_t key, double p, int64_t n) {
  SplitMix64 gen(key);
  std::vector<double> keep(n);
  for (double& k : keep) k = static_cast<double>(gen.Next() >> 11) * 0x1p-53 < p ? 0.0 : 1.0;
  return keep;
}

template <typename T>
std::vector<T> RunDropout(Backend* be, DType dt, uint64_t key, double p, int64_t n) {
  std::vector<T> keep(n + 1);
  std::memset(keep.data(), 0x7f, keep.size() * sizeof(T));  // a sentinel past the end too
  be->DropoutKeep(dt, key, p, n, keep.data());
  return keep;
}

TEST(DropoutTest, MatchesSplitMix64BitForBit) {
  const int64_t n = 5000;
  for (double p : {0.05, 0.3}) {
    for (uint64_t key : {uint64_t{0}, uint64_t{0x0123456789ABCDEFull}, ~uint64_t{0}}) {
      const std::string what = "p=" + std::to_string(p) + " key=" + std::to_string(key);
      const std::vector<double> want = ReferenceMask(key, p, n);
      const std::vector<double> f64 = RunDropout<double>(Cpu(1), DType::kF64, key, p, n);
      const std::vector<float> f32 = RunDropout<float>(Cpu(1), DType::kF32, key, p, n);
      const std::vector<uint16_t> bf16 = RunDropout<uint16_t>(Cpu(1), DType::kBF16, key, p, n);
      int mismatches = 0;
      for (int64_t i = 0; i < n; ++i) {
        mismatches += f64[i] != want[i];
        mismatches += f32[i] != static_cast<float>(want[i]);
        mismatches += bf16[i] != (want[i] == 0 ? uint16_t{0} : uint16_t{0x3F80});  // bf16 1.0
      }
      EXPECT_EQ(mismatches, 0) << what;
      uint64_t tail64;
      std::memcpy(&tail64, &f64[n], 8);
      EXPECT_EQ(tail64, 0x7f7f7f7f7f7f7f7full) << what << ": wrote past n";
      EXPECT_EQ(bf16[n], 0x7f7f) << what << ": wrote past n";
    }
  }
}

TEST(DropoutTest, DropsAFractionPIndependently) {
  const int64_t n = 1000000;
  for (double p : {0.05, 0.1, 0.5}) {
    const std::vector<float> keep = RunDropout<float>(Cpu(2), DType::kF32, 42, p, n);
    int64_t dropped = 0, pairs = 0;
    for (int64_t i = 0; i < n; ++i) {
      dropped += keep[i] == 0;
      if (i > 0) pairs += keep[i] == 0 && keep[i - 1] == 0;
    }
    const double frac = static_cast<double>(dropped) / n;
    EXPECT_NEAR(frac, p, 5 * std::sqrt(p * (1 - p) / n)) << "p=" << p;
    const double pair_frac = static_cast<double>(pairs) / (n - 1), q = p * p;
    EXPECT_NEAR(pair_frac, q, 5 * std::sqrt(q * (1 - q) / (n - 1))) << "adjacent pairs, p=" << p;
  }
}

TEST(DropoutTest, KeysDifferAndThreadsDoNot) {
  const int64_t n = 300000;  // enough work for the CPU backend to use both threads
  const std::vector<double> one = RunDropout<double>(Cpu(1), DType::kF64, 7, 0.1, n);
  const std::vector<double> two = RunDropout<double>(Cpu(2), DType::kF64, 7, 0.1, n);
  ExpectBitwiseEqual(one, two, "1 vs 2 threads");
  const std::vector<double> other = RunDropout<double>(Cpu(2), DType::kF64, 8, 0.1, n);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += one[i] != other[i];
  // Independent masks differ where exactly one drops: 2 p (1 - p) = 18% of elements.
  EXPECT_NEAR(static_cast<double>(differ) / n, 0.18, 0.01) << "keys 7 and 8";
}

}  // namespace
}  // namespace pmol::testing
