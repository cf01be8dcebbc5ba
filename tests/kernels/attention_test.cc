// Backend::AttentionForward/AttentionBackward (causal grouped-query attention) against:
// an explicit long-double score matrix S = scale * Q K^T with -inf above the diagonal,
// a row softmax, and P V (out) / logsumexp (lse); central finite differences in f64 of
// L = sum(g * out) for dq, dk, dv; the f64 kernel for the f32 kernel; and the 1-thread
// result for 2 and 3 threads (bitwise, as the implementation promises).
// Shapes: GQA 4/2, MHA (Hq = Hkv), MQA 6/1, a single token (T = 1), a long odd one
// (T = 13, D = 37), one with a scale other than 1/sqrt(D), and one spanning several of
// the CPU kernel's query blocks (T = 260). Key holes (two replies sharing a prefix in one
// row, the second reply not seeing the first): on a short row, with an empty prefix, and
// over several query blocks, where one block's rows share a hole (the CPU kernel leaves
// it out of its GEMMs) and another mixes rows with and without one; row b shifts the
// split by b so that rows differ.
//
// Tolerances: a first-order forward error bound evaluated per element from the exact
// (long-double) intermediates, for unit roundoff u (2^-53: f64 vs reference, 2^-24 + 2^-53:
// f32 vs f64). With n = i + 1 visible keys, S_abs = max_j scale * sum_d |q_d k_jd| and
// R = max_j |s_j - max s|, every probability p_j carries a relative error of at most
//   Kp * u,  Kp = 2 (D + 2) S_abs + R + log n + |lse| + n + 11
// (the D-term score dot product, for s_j and for the max/lse subtracted from it, the
// rounding of the exp argument, the n-term normaliser, the exp itself (4u: the f32
// kernel's AVX2 exp, kernels/cpu/exp_avx2.h) and a few single roundings).
// Then out_d: (2 Kp + n + 3) u max_j |v_jd|;  lse: ((D + 2) S_abs + n + 4 + |lse|) u;
// and for the backward, with dp_j = do . v_j, di = do . out, ds_j = scale p_j (dp_j - di):
//   err(ds_j) <= scale p_j (Kp u |dp_j - di| + err(dp_j) + err(di) + 3u |dp_j - di|),
//   dq_d <= sum_j (err(ds_j) + (n + 1) u |ds_j|) |k_jd|,
//   dk_jd <= sum_{h in group, i >= j} (err(ds_ij) + (T G + 2) u |ds_ij|) |q_id|,
//   dv_jd <= sum_{h, i} (Kp + T G + 2) u p_ij |do_id|     (G = Hq / Hkv),
// all doubled to cover second-order terms and the f64 run's own error.
// Finite differences: see kernel_test_util.h (1e-7 * (1 + |g|)).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

struct Shape {
  const char* name;
  int64_t batch, seq, q_heads, kv_heads, head_dim;
  double scale;  // 0: 1/sqrt(head_dim)
  // Key holes when reply_a > 0: row b is [prefix + b | reply A of reply_a | reply B], and
  // the queries of reply B do not see reply A.
  int64_t prefix = 0, reply_a = 0;
};

struct AttnTensors {
  std::vector<double> out, lse, dq, dk, dv;
};

struct AttnCase {
  AttentionShape sh;  // key_holes is set from `holes` when the kernel runs
  std::vector<double> q, k, v, dout;
  std::vector<int32_t> holes;  // [B * T, 2], or empty

  bool Visible(int64_t b, int64_t i, int64_t j) const {
    if (j > i) return false;
    if (holes.empty() || j == i) return true;
    const int64_t at = 2 * (b * sh.seq + i);
    return j < holes[at] || j >= holes[at + 1];
  }

  static AttnCase Make(const Shape& s, uint32_t seed, double qk_range = 1.0) {
    AttnCase c;
    c.sh = {s.batch, s.seq, s.q_heads, s.kv_heads, s.head_dim,
            s.scale != 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim))};
    std::mt19937 rng(seed);
    const int64_t nq = s.batch * s.seq * s.q_heads * s.head_dim;
    const int64_t nkv = s.batch * s.seq * s.kv_heads * s.head_dim;
    c.q = Uniform(rng, nq, -qk_range, qk_range);
    c.k = Uniform(rng, nkv, -qk_range, qk_range);
    c.v = Uniform(rng, nkv, -1.0, 1.0);
    c.dout = Uniform(rng, nq, -1.0, 1.0);
    if (s.reply_a > 0) {
      c.holes.assign(2 * s.batch * s.seq, 0);
      for (int64_t b = 0; b < s.batch; ++b) {
        const int64_t a0 = s.prefix + b, b0 = a0 + s.reply_a;
        for (int64_t i = b0; i < s.seq; ++i) {
          c.holes[2 * (b * s.seq + i)] = static_cast<int32_t>(a0);
          c.holes[2 * (b * s.seq + i) + 1] = static_cast<int32_t>(b0);
        }
      }
    }
    return c;
  }
  AttnCase RoundedToF32() const {
    AttnCase c = *this;
    c.q = RoundToF32(q);
    c.k = RoundToF32(k);
    c.v = RoundToF32(v);
    c.dout = RoundToF32(dout);
    c.sh.scale = static_cast<float>(sh.scale);
    return c;
  }
  int64_t Q(int64_t b, int64_t t, int64_t h, int64_t d) const {
    return ((b * sh.seq + t) * sh.q_heads + h) * sh.head_dim + d;
  }
  int64_t KV(int64_t b, int64_t t, int64_t g, int64_t d) const {
    return ((b * sh.seq + t) * sh.kv_heads + g) * sh.head_dim + d;
  }
  int64_t L(int64_t b, int64_t h, int64_t t) const { return (b * sh.q_heads + h) * sh.seq + t; }
};

// Forward and backward of the kernel in T.
template <typename T>
AttnTensors RunAttention(const AttnCase& c, bool backward = true, int threads = 2) {
  Backend* be = Cpu(threads);
  const DType dt = DTypeOf<T>();
  std::vector<T> q = Cast<T>(c.q), k = Cast<T>(c.k), v = Cast<T>(c.v), dout = Cast<T>(c.dout);
  std::vector<T> out = Cast<T>(Nans(q.size()));
  std::vector<T> lse = Cast<T>(Nans(c.sh.batch * c.sh.q_heads * c.sh.seq));
  AttentionShape sh = c.sh;
  sh.key_holes = c.holes.empty() ? nullptr : c.holes.data();
  be->AttentionForward(dt, sh, q.data(), k.data(), v.data(), out.data(), lse.data());
  AttnTensors r{ToDouble(out), ToDouble(lse), {}, {}, {}};
  if (!backward) return r;
  // dq, dk, dv are documented as overwritten: start them as NaN.
  std::vector<T> dq = Cast<T>(Nans(q.size())), dk = Cast<T>(Nans(k.size())),
                 dv = Cast<T>(Nans(v.size()));
  be->AttentionBackward(dt, sh, q.data(), k.data(), v.data(), out.data(), lse.data(),
                        dout.data(), dq.data(), dk.data(), dv.data());
  r.dq = ToDouble(dq);
  r.dk = ToDouble(dk);
  r.dv = ToDouble(dv);
  return r;
}

// The explicit-score-matrix reference (out, lse) and the error bounds of the file
// comment for unit roundoff u (out, lse, dq, dk, dv).
void Reference(const AttnCase& c, double u, AttnTensors* ref, AttnTensors* bound) {
  const int64_t B = c.sh.batch, T = c.sh.seq, H = c.sh.q_heads, D = c.sh.head_dim;
  const int64_t G = H / c.sh.kv_heads;
  const long double scale = c.sh.scale;
  ref->out.assign(c.q.size(), 0.0);
  ref->lse.assign(B * H * T, 0.0);
  bound->out.assign(c.q.size(), 0.0);
  bound->lse.assign(B * H * T, 0.0);
  bound->dq.assign(c.q.size(), 0.0);
  bound->dk.assign(c.k.size(), 0.0);
  bound->dv.assign(c.v.size(), 0.0);
  const long double kInf = std::numeric_limits<long double>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / G;
      // Explicit causal score matrix for this (batch, head), -inf where masked.
      std::vector<long double> s(T * T, -kInf), s_abs(T * T, 0);
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          if (!c.Visible(b, i, j)) continue;
          long double dot = 0, dot_abs = 0;
          for (int64_t d = 0; d < D; ++d) {
            const long double t = static_cast<long double>(c.q[c.Q(b, i, h, d)]) *
                                  c.k[c.KV(b, j, g, d)];
            dot += t;
            dot_abs += std::abs(t);
          }
          s[i * T + j] = scale * dot;
          s_abs[i * T + j] = scale * dot_abs;
        }
      }
      for (int64_t i = 0; i < T; ++i) {
        const long double* si = &s[i * T];
        const long double m = *std::max_element(si, si + T);  // masked entries are -inf
        long double z = 0, s_max = 0, r = 0;
        for (int64_t j = 0; j < T; ++j) z += std::exp(si[j] - m);  // exp(-inf) = 0
        const long double lse = m + std::log(z);
        // The visible keys: p[jj] belongs to key vis[jj].
        std::vector<int64_t> vis;
        for (int64_t j = 0; j <= i; ++j)
          if (c.Visible(b, i, j)) vis.push_back(j);
        const int64_t n = static_cast<int64_t>(vis.size());
        for (int64_t j : vis) {
          s_max = std::max(s_max, s_abs[i * T + j]);
          r = std::max(r, m - si[j]);
        }
        std::vector<long double> p(n);
        for (int64_t jj = 0; jj < n; ++jj) p[jj] = std::exp(si[vis[jj]] - lse);
        const long double kp = 2 * (D + 2) * s_max + r + std::log(static_cast<long double>(n)) +
                               std::abs(lse) + n + 11;
        ref->lse[c.L(b, h, i)] = static_cast<double>(lse);
        bound->lse[c.L(b, h, i)] =
            static_cast<double>(2 * u * ((D + 2) * s_max + n + 4 + std::abs(lse)));
        std::vector<long double> o(D, 0), o_bound(D, 0);
        for (int64_t d = 0; d < D; ++d) {
          long double v_max = 0;
          for (int64_t jj = 0; jj < n; ++jj) {
            const int64_t j = vis[jj];
            o[d] += p[jj] * c.v[c.KV(b, j, g, d)];
            v_max = std::max(v_max, std::abs(static_cast<long double>(c.v[c.KV(b, j, g, d)])));
          }
          o_bound[d] = (2 * kp + n + 3) * u * v_max;
          ref->out[c.Q(b, i, h, d)] = static_cast<double>(o[d]);
          bound->out[c.Q(b, i, h, d)] = static_cast<double>(2 * o_bound[d]);
        }
        // Backward magnitudes.
        long double di = 0, di_err = 0;
        for (int64_t d = 0; d < D; ++d) {
          const long double dod = c.dout[c.Q(b, i, h, d)];
          di += dod * o[d];
          di_err += (D + 1) * u * std::abs(dod * o[d]) + std::abs(dod) * o_bound[d];
        }
        for (int64_t jj = 0; jj < n; ++jj) {
          const int64_t j = vis[jj];
          long double dp = 0, dp_err = 0;
          for (int64_t d = 0; d < D; ++d) {
            const long double t =
                static_cast<long double>(c.dout[c.Q(b, i, h, d)]) * c.v[c.KV(b, j, g, d)];
            dp += t;
            dp_err += (D + 1) * u * std::abs(t);
          }
          const long double diff = std::abs(dp - di);
          const long double ds = scale * p[jj] * diff;  // |ds_j|
          const long double ds_err =
              scale * p[jj] * (kp * u * diff + dp_err + di_err + 3 * u * diff);
          for (int64_t d = 0; d < D; ++d) {
            bound->dq[c.Q(b, i, h, d)] += static_cast<double>(
                2 * (ds_err + (n + 1) * u * ds) * std::abs(c.k[c.KV(b, j, g, d)]));
            bound->dk[c.KV(b, j, g, d)] += static_cast<double>(
                2 * (ds_err + (T * G + 2) * u * ds) * std::abs(c.q[c.Q(b, i, h, d)]));
            bound->dv[c.KV(b, j, g, d)] += static_cast<double>(
                2 * (kp + T * G + 2) * u * p[jj] * std::abs(c.dout[c.Q(b, i, h, d)]));
          }
        }
      }
    }
  }
}

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) { return info.param.name; }

class AttentionShapeTest : public ::testing::TestWithParam<Shape> {};

TEST_P(AttentionShapeTest, ForwardMatchesExplicitSoftmax) {
  const AttnCase c = AttnCase::Make(GetParam(), 31);
  AttnTensors ref, bound;
  Reference(c, kF64Unit, &ref, &bound);
  const AttnTensors got = RunAttention<double>(c, /*backward=*/false);
  ExpectWithin(got.out, ref.out, bound.out, "out");
  ExpectWithin(got.lse, ref.lse, bound.lse, "lse");
}

TEST_P(AttentionShapeTest, BackwardMatchesFiniteDifferences) {
  AttnCase c = AttnCase::Make(GetParam(), 32);
  const AttnTensors analytic = RunAttention<double>(c);  // c.dout plays the role of dL/dout
  auto forward = [&]() { return RunAttention<double>(c, /*backward=*/false).out; };
  ExpectGradientMatches(analytic.dq, NumericGradient(&c.q, c.dout, forward), "dq");
  ExpectGradientMatches(analytic.dk, NumericGradient(&c.k, c.dout, forward), "dk");
  ExpectGradientMatches(analytic.dv, NumericGradient(&c.v, c.dout, forward), "dv");
}

TEST_P(AttentionShapeTest, F32AgreesWithF64) {
  const AttnCase c = AttnCase::Make(GetParam(), 33).RoundedToF32();
  AttnTensors unused, bound;
  Reference(c, kF32Unit + kF64Unit, &unused, &bound);
  const AttnTensors f32 = RunAttention<float>(c), f64 = RunAttention<double>(c);
  ExpectWithin(f32.out, f64.out, bound.out, "out");
  ExpectWithin(f32.lse, f64.lse, bound.lse, "lse");
  ExpectWithin(f32.dq, f64.dq, bound.dq, "dq");
  ExpectWithin(f32.dk, f64.dk, bound.dk, "dk");
  ExpectWithin(f32.dv, f64.dv, bound.dv, "dv");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionShapeTest,
    ::testing::Values(Shape{"Gqa4to2", 2, 7, 4, 2, 6, 0.0}, Shape{"Mha", 2, 5, 3, 3, 4, 0.0},
                      Shape{"Mqa6to1", 1, 6, 6, 1, 5, 0.0},
                      Shape{"SingleToken", 3, 1, 4, 2, 8, 0.0},
                      Shape{"LongOdd", 1, 13, 4, 1, 37, 0.0},
                      Shape{"CustomScale", 2, 7, 4, 2, 6, 0.37},
                      // Longer than the CPU kernel's 128-position query block: three
                      // blocks, the last one partial.
                      Shape{"MultiBlock", 1, 260, 2, 1, 2, 0.0},
                      // Key holes: [prefix | A | B], B not seeing A.
                      Shape{"HoleGqa", 2, 11, 4, 2, 6, 0.0, 3, 4},
                      Shape{"HoleNoPrefix", 2, 9, 3, 3, 4, 0.0, 0, 4},
                      // Block 128..255 mixes A rows (no hole) and B rows; block
                      // 256..259 is all B rows, whose shared hole [40, 140) is skipped.
                      Shape{"HoleMultiBlock", 2, 260, 2, 1, 2, 0.0, 40, 100}),
    ShapeName);

TEST(AttentionTest, LargeScoresStayFinite) {
  // Scores up to ~+-2000 in f64 and ~+-400 in f32: exp without subtracting the row max
  // would overflow (e^709 and e^88 are the limits).
  const Shape shape{"Large", 2, 7, 4, 2, 6, 0.0};
  const AttnCase c64 = AttnCase::Make(shape, 34, /*qk_range=*/30.0);
  AttnTensors ref, bound;
  Reference(c64, kF64Unit, &ref, &bound);
  const AttnTensors got64 = RunAttention<double>(c64);
  ExpectWithin(got64.out, ref.out, bound.out, "f64 out");
  ExpectWithin(got64.lse, ref.lse, bound.lse, "f64 lse");
  for (double x : got64.dq) ASSERT_TRUE(std::isfinite(x));

  const AttnCase c32 = AttnCase::Make(shape, 35, /*qk_range=*/16.0).RoundedToF32();
  Reference(c32, kF32Unit + kF64Unit, &ref, &bound);
  EXPECT_GT(MaxAbs(ref.lse), 100.0);  // the case really is out of exp's f32 range
  const AttnTensors got32 = RunAttention<float>(c32), want = RunAttention<double>(c32);
  ExpectWithin(got32.out, want.out, bound.out, "f32 out");
  ExpectWithin(got32.lse, want.lse, bound.lse, "f32 lse");
  ExpectWithin(got32.dq, want.dq, bound.dq, "f32 dq");
  ExpectWithin(got32.dk, want.dk, bound.dk, "f32 dk");
  ExpectWithin(got32.dv, want.dv, bound.dv, "f32 dv");
}

TEST(AttentionTest, NanInAKeyReachesEveryQueryThatSeesIt) {
  // The f32 softmax's vector exp maps NaN to 0; the kernel must route such rows to the
  // scalar path. Key 0 of batch 0, kv head 0 is NaN: every query of heads 0 and 1 in
  // batch 0 sees it (out NaN); batch 1 and the heads of kv head 1 stay finite.
  AttnCase c = AttnCase::Make(Shape{"Nan", 2, 40, 4, 2, 8, 0.0}, 37).RoundedToF32();
  for (int64_t d = 0; d < c.sh.head_dim; ++d) c.k[c.KV(0, 0, 0, d)] = std::nan("");
  const AttnTensors got = RunAttention<float>(c, /*backward=*/false);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < c.sh.seq; ++t)
      for (int64_t h = 0; h < c.sh.q_heads; ++h) {
        const bool sees = b == 0 && h < 2;
        EXPECT_EQ(std::isnan(got.out[c.Q(b, t, h, 0)]), sees) << "b=" << b << " t=" << t << " h=" << h;
      }
}

TEST(AttentionTest, BackwardIsBitwiseIndependentOfThreadCount) {
  // 12 (batch, head) tasks of 2 * 37^2 * 16 work each: split over 2 and 3 threads.
  const AttnCase c = AttnCase::Make(Shape{"Det", 2, 150, 6, 2, 16, 0.0}, 36).RoundedToF32();
  const AttnTensors one = RunAttention<float>(c, true, /*threads=*/1);
  for (int threads : {2, 3}) {
    const AttnTensors many = RunAttention<float>(c, true, threads);
    const std::string t = ", threads=" + std::to_string(threads);
    ExpectBitwiseEqual(many.out, one.out, "out" + t);
    ExpectBitwiseEqual(many.lse, one.lse, "lse" + t);
    ExpectBitwiseEqual(many.dq, one.dq, "dq" + t);
    ExpectBitwiseEqual(many.dk, one.dk, "dk" + t);
    ExpectBitwiseEqual(many.dv, one.dv, "dv" + t);
  }
}

}  // namespace
}  // namespace pmol::testing
