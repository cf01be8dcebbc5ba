// Backend::ApplyRope against a literal long-double transcription of Hugging Face's
//   q_embed = q * cat(cos, cos) + rotate_half(q) * cat(sin, sin),
//   rotate_half(q) = cat(-q[d/2:], q[:d/2]),
// with non-contiguous, repeated and zero positions; inverse=true against the same
// reference with negated angles (sin -> -sin); inverse as the backward of the rotation
// against central finite differences of L = sum(g * rope(x)); f32 against f64.
//
// Tolerances (u = unit roundoff): each output is a*c -/+ b*s, two products and one sum:
// |err| <= 3u (|a c| + |b s|); we allow 4u (the extra u covers the reference side and
// the f64 run when comparing f32 to f64). Round trip rope(rope(x), inverse) = x up to
// 2 * 4u * 2 max(|a|, |b|) per pair. Finite differences: see kernel_test_util.h.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

struct RopeCase {
  int64_t tokens = 0, heads = 0, head_dim = 0, max_pos = 0;
  std::vector<double> x, cos, sin;  // cos/sin [max_pos, head_dim/2]
  std::vector<int32_t> positions;

  static RopeCase Make(uint32_t seed, int64_t tokens, int64_t heads, int64_t head_dim) {
    std::mt19937 rng(seed);
    RopeCase rc;
    rc.tokens = tokens;
    rc.heads = heads;
    rc.head_dim = head_dim;
    rc.max_pos = 23;
    const int64_t half = head_dim / 2;
    for (int64_t p = 0; p < rc.max_pos; ++p) {
      for (int64_t j = 0; j < half; ++j) {
        const double theta = p * std::pow(10000.0, -2.0 * j / head_dim);
        rc.cos.push_back(std::cos(theta));
        rc.sin.push_back(std::sin(theta));
      }
    }
    // Not sorted, not contiguous, repeated, and including position 0 (identity).
    const int32_t kPositions[] = {17, 3, 0, 22, 5, 5, 11, 1, 19, 8, 2, 13, 7};
    for (int64_t t = 0; t < tokens; ++t) rc.positions.push_back(kPositions[t % 13]);
    rc.x = Uniform(rng, tokens * heads * head_dim, -2.0, 2.0);
    return rc;
  }
  RopeCase RoundedToF32() const {
    RopeCase r = *this;
    r.x = RoundToF32(x);
    r.cos = RoundToF32(cos);
    r.sin = RoundToF32(sin);
    return r;
  }
};

template <typename T>
std::vector<double> Rope(const RopeCase& rc, const std::vector<double>& x, bool inverse) {
  std::vector<T> xt = Cast<T>(x), cos = Cast<T>(rc.cos), sin = Cast<T>(rc.sin);
  Cpu(2)->ApplyRope(DTypeOf<T>(), xt.data(), rc.tokens, rc.heads, rc.head_dim, cos.data(),
                    sin.data(), rc.positions.data(), inverse);
  return ToDouble(xt);
}

// HF rotate_half, literally; sin_sign = -1 rotates by the negative angle. `bound` gets
// 4 * unit * (|x cos| + |rotate_half(x) sin|) per element.
std::vector<double> Reference(const RopeCase& rc, const std::vector<double>& x, double sin_sign,
                              double unit, std::vector<double>* bound) {
  const int64_t d = rc.head_dim, half = d / 2;
  std::vector<double> out(x.size());
  bound->assign(x.size(), 0.0);
  for (int64_t t = 0; t < rc.tokens; ++t) {
    for (int64_t h = 0; h < rc.heads; ++h) {
      const double* q = x.data() + (t * rc.heads + h) * d;
      std::vector<long double> cos_full(d), sin_full(d), rotated(d);
      for (int64_t j = 0; j < d; ++j) {
        cos_full[j] = rc.cos[rc.positions[t] * half + j % half];
        sin_full[j] = sin_sign * rc.sin[rc.positions[t] * half + j % half];
        rotated[j] = j < half ? -static_cast<long double>(q[j + half]) : q[j - half];
      }
      for (int64_t j = 0; j < d; ++j) {
        const int64_t i = (t * rc.heads + h) * d + j;
        out[i] = static_cast<double>(q[j] * cos_full[j] + rotated[j] * sin_full[j]);
        (*bound)[i] = 4 * unit *
                      static_cast<double>(std::abs(q[j] * cos_full[j]) +
                                          std::abs(rotated[j] * sin_full[j]));
      }
    }
  }
  return out;
}

TEST(RopeTest, ForwardMatchesRotateHalfReference) {
  const RopeCase rc = RopeCase::Make(21, 13, 3, 14);  // half = 7
  std::vector<double> bound;
  const std::vector<double> expected = Reference(rc, rc.x, 1.0, kF64Unit, &bound);
  ExpectWithin(Rope<double>(rc, rc.x, false), expected, bound, "rope(x)");
}

TEST(RopeTest, PositionZeroIsIdentity) {
  const RopeCase rc = RopeCase::Make(22, 13, 3, 14);
  const std::vector<double> y = Rope<double>(rc, rc.x, false);
  const int64_t width = rc.heads * rc.head_dim;
  ASSERT_EQ(rc.positions[2], 0);
  for (int64_t i = 2 * width; i < 3 * width; ++i) EXPECT_EQ(y[i], rc.x[i]) << i;
}

TEST(RopeTest, InverseRotatesByNegativeAngle) {
  const RopeCase rc = RopeCase::Make(23, 13, 3, 14);
  std::vector<double> bound;
  const std::vector<double> expected = Reference(rc, rc.x, -1.0, kF64Unit, &bound);
  ExpectWithin(Rope<double>(rc, rc.x, true), expected, bound, "rope^-1(x)");
}

TEST(RopeTest, InverseUndoesForward) {
  const RopeCase rc = RopeCase::Make(24, 13, 3, 14);
  const std::vector<double> back = Rope<double>(rc, Rope<double>(rc, rc.x, false), true);
  const int64_t d = rc.head_dim, half = d / 2;
  std::vector<double> bound(rc.x.size());
  for (size_t i = 0; i < rc.x.size(); ++i) {
    const int64_t j = static_cast<int64_t>(i) % d;
    const size_t partner = j < half ? i + half : i - half;
    bound[i] = 16 * kF64Unit * std::max(std::abs(rc.x[i]), std::abs(rc.x[partner]));
  }
  ExpectWithin(back, rc.x, bound, "rope^-1(rope(x))");
}

TEST(RopeTest, InverseIsTheBackwardOfTheRotation) {
  RopeCase rc = RopeCase::Make(25, 13, 3, 14);
  std::mt19937 rng(26);
  const std::vector<double> g = Uniform(rng, rc.x.size());
  const std::vector<double> numeric =
      NumericGradient(&rc.x, g, [&]() { return Rope<double>(rc, rc.x, false); });
  ExpectGradientMatches(Rope<double>(rc, g, true), numeric, "dx");
}

TEST(RopeTest, F32AgreesWithF64) {
  const RopeCase rc = RopeCase::Make(27, 13, 5, 74).RoundedToF32();  // half = 37
  for (bool inverse : {false, true}) {
    std::vector<double> bound;
    Reference(rc, rc.x, inverse ? -1.0 : 1.0, kF32Unit + kF64Unit, &bound);
    ExpectWithin(Rope<float>(rc, rc.x, inverse), Rope<double>(rc, rc.x, inverse), bound,
                 inverse ? "rope^-1(x)" : "rope(x)");
  }
}

}  // namespace
}  // namespace pmol::testing
