// Mixed precision on the CPU backend (kernels/backend.h, dt = bf16): every op that takes
// bf16 is run three times on the same inputs, which are exact bf16 values: with dt = bf16,
// with dt = f32 and with dt = f64 (side statistics and parameter gradients in
// AccumDType(dt): f32, f32, f64; a statistic that is an input is an exact f32 value in
// all three runs). Two checks:
//   1. The contract, bit for bit: each bf16 output is the f32 run's output rounded once to
//      bf16 (nearest even), and each f32 statistic equals the f32 run's. This is what the
//      CUDA backend is compared against (tests/cuda/cuda_backend_test.cc).
//   2. Against the f64 run (the f64 kernels have their own oracle tests): the bf16 output
//      is within half a bf16 ulp of the f32 result, which is within f32 rounding of the
//      f64 one, so |bf16 - f64| <= 2^-8 |f64| + 1e-5 max|f64| (one bf16 ulp, plus room
//      for f32 summation error under cancellation: the sums here have <= 64 terms of
//      order one, f32 error <= 64 * 2^-24 ~ 4e-6 of the largest output). A missed
//      write-back, a wrong operand size or a statistic read as bf16 is off by O(1).
// Also: ops write only what they own (CopyRows and GemmTo leave the gaps of strided
// matrices untouched), GemmTo with an f32 C accumulates in f32 without rounding, and
// RmsNormForward with a residual, whose norm reads the bf16-rounded sum (so its y is not
// the f32 run's y rounded), is bit for bit Axpy followed by the op without a residual.
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

template <typename S>
using AccOf = std::conditional_t<std::is_same_v<S, Bf16>, float, S>;

template <typename S>
constexpr DType DtOf() {
  if constexpr (std::is_same_v<S, Bf16>) return DType::kBF16;
  if constexpr (std::is_same_v<S, float>) return DType::kF32;
  return DType::kF64;
}

template <typename S>
std::vector<S> As(const std::vector<double>& v) {
  std::vector<S> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<S, Bf16>) {
      out[i].bits = F64ToBf16(v[i]);
    } else {
      out[i] = static_cast<S>(v[i]);
    }
  }
  return out;
}

template <typename S>
std::vector<double> D(const std::vector<S>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(static_cast<AccOf<S>>(v[i]));
  return out;
}

// Exact bf16 values, uniform in [lo, hi).
std::vector<double> Bf16Values(std::mt19937& rng, int64_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<double> v = Uniform(rng, n, lo, hi);
  for (double& x : v) x = Bf16ToF32(F64ToBf16(x));
  return v;
}

// The outputs of one run: those of type dt, then the statistics (AccumDType(dt)).
struct Outputs {
  std::vector<std::vector<double>> dt;
  std::vector<std::vector<double>> stat;
};

// Runs op with S = Bf16, float and double and applies the file comment's two checks.
template <typename Op>
void CheckOp(const std::string& name, Op op) {
  SCOPED_TRACE(name);
  const Outputs o16 = op(Bf16{}), o32 = op(float{}), o64 = op(double{});
  ASSERT_EQ(o16.dt.size(), o32.dt.size());
  ASSERT_EQ(o16.stat.size(), o32.stat.size());
  auto check_f64 = [&](const std::vector<double>& got, const std::vector<double>& want,
                       const std::string& what) {
    const double scale = MaxAbs(want);
    std::vector<double> bound(want.size());
    for (size_t i = 0; i < want.size(); ++i) bound[i] = 0x1p-8 * std::abs(want[i]) + 1e-5 * scale;
    ExpectWithin(got, want, bound, name + " " + what + " against f64");
  };
  for (size_t o = 0; o < o16.dt.size(); ++o) {
    const std::vector<double>& got = o16.dt[o];
    const std::vector<double>& f32 = o32.dt[o];
    ASSERT_EQ(got.size(), f32.size());
    int mismatches = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const uint16_t want_bits = F32ToBf16(static_cast<float>(f32[i]));
      if (F64ToBf16(got[i]) != want_bits && ++mismatches <= 3) {
        ADD_FAILURE() << name << " output " << o << "[" << i << "] = " << got[i]
                      << ", the f32 result rounded is " << Bf16ToF32(want_bits);
      }
    }
    check_f64(got, o64.dt[o], "output " + std::to_string(o));
  }
  for (size_t o = 0; o < o16.stat.size(); ++o) {
    EXPECT_EQ(o16.stat[o], o32.stat[o]) << name << " statistic " << o << " differs from f32";
    check_f64(o16.stat[o], o64.stat[o], "statistic " + std::to_string(o));
  }
}

Backend* Be() { return Cpu(2); }

TEST(Bf16Ops, ElementWise) {
  std::mt19937 rng(1);
  const int64_t rows = 7, cols = 37, n = rows * cols;
  const std::vector<double> x = Bf16Values(rng, n), y = Bf16Values(rng, n),
                            bias = Bf16Values(rng, cols);
  CheckOp("Fill", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> out = As<S>(y);
    Be()->Fill(DtOf<S>(), out.data(), 0.3, n);
    return Outputs{{D(out)}, {}};
  });
  CheckOp("Axpy", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> xs = As<S>(x), ys = As<S>(y);
    Be()->Axpy(DtOf<S>(), 0.7, xs.data(), ys.data(), n);
    return Outputs{{D(ys)}, {}};
  });
  CheckOp("Scale", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> xs = As<S>(x);
    Be()->Scale(DtOf<S>(), -1.3, xs.data(), n);
    return Outputs{{D(xs)}, {}};
  });
  CheckOp("AddBias", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> ys = As<S>(y), bs = As<S>(bias);
    Be()->AddBias(DtOf<S>(), ys.data(), bs.data(), rows, cols);
    return Outputs{{D(ys)}, {}};
  });
  CheckOp("SumRows", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> dy = As<S>(x);
    std::vector<AccOf<S>> db = As<AccOf<S>>(bias);  // a parameter gradient: AccumDType
    Be()->SumRows(DtOf<S>(), dy.data(), rows, cols, db.data());
    return Outputs{{}, {D(db)}};
  });
  const std::vector<double> gate = Bf16Values(rng, n, -4, 4), dout = Bf16Values(rng, n);
  CheckOp("SwiGlu", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> g = As<S>(gate), u = As<S>(y), d = As<S>(dout), out(n), dg(n), du(n);
    Be()->SwiGluForward(DtOf<S>(), g.data(), u.data(), out.data(), n);
    Be()->SwiGluBackward(DtOf<S>(), g.data(), u.data(), d.data(), dg.data(), du.data(), n);
    return Outputs{{D(out), D(dg), D(du)}, {}};
  });
}

TEST(Bf16Ops, ColumnBlocksAndRows) {
  std::mt19937 rng(2);
  const int64_t rows = 9, blocks = 7, width = 8, n = rows * blocks * width;
  const std::vector<double> x = Bf16Values(rng, n), y = Bf16Values(rng, n),
                            s = Bf16Values(rng, rows * blocks, 0, 1);
  CheckOp("ScaleColumnBlocks", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> xs = As<S>(x), ss = As<S>(s), out(n);
    Be()->ScaleColumnBlocks(DtOf<S>(), xs.data(), ss.data(), rows, blocks, width, 0.5, out.data());
    return Outputs{{D(out)}, {}};
  });
  CheckOp("ColumnBlockDots", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> xs = As<S>(x), ys = As<S>(y);
    std::vector<AccOf<S>> out(rows * blocks);
    Be()->ColumnBlockDots(DtOf<S>(), xs.data(), ys.data(), rows, blocks, width, 0.5, out.data());
    return Outputs{{}, {D(out)}};
  });
  // Rows 4, 0, 7 of a [9, 12] source (columns 2..9) into rows 1, 5, 2 of a [6, 10]
  // destination (columns 1..8): everything else must keep its bits.
  const std::vector<double> src = Bf16Values(rng, 9 * 12), dst0 = Bf16Values(rng, 6 * 10);
  const std::vector<int32_t> src_rows = {4, 0, 7}, dst_rows = {1, 5, 2};
  for (bool accumulate : {false, true}) {
    CheckOp(accumulate ? "CopyRows accumulate" : "CopyRows", [&](auto tag) {
      using S = decltype(tag);
      std::vector<S> from = As<S>(src), to = As<S>(dst0);
      Be()->CopyRows(DtOf<S>(), from.data() + 2, 12, src_rows.data(), to.data() + 1, 10,
                     dst_rows.data(), 3, 8, accumulate);
      return Outputs{{D(to)}, {}};
    });
  }
}

TEST(Bf16Ops, GemmToBf16AndF32) {
  std::mt19937 rng(3);
  const int64_t m = 13, n = 11, k = 64, ld_pad = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (double beta : {0.0, 0.5}) {
        const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k;
        const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n;
        const int64_t lda = a_cols + ld_pad, ldb = b_cols + ld_pad, ldc = n + ld_pad;
        const std::vector<double> a = Bf16Values(rng, a_rows * lda),
                                  b = Bf16Values(rng, b_rows * ldb),
                                  c = Bf16Values(rng, m * ldc);
        const std::string what = std::string("ta=") + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0") +
                                 " beta=" + std::to_string(beta);
        CheckOp("Gemm " + what, [&](auto tag) {
          using S = decltype(tag);
          std::vector<S> as = As<S>(a), bs = As<S>(b), cs = As<S>(c);
          Be()->Gemm(DtOf<S>(), ta, tb, m, n, k, 1.25, as.data(), lda, bs.data(), ldb, beta,
                     cs.data(), ldc);
          return Outputs{{D(cs)}, {}};  // the padding columns must come back unchanged
        });
        CheckOp("GemmTo f32 C " + what, [&](auto tag) {
          using S = decltype(tag);
          using A = AccOf<S>;
          std::vector<S> as = As<S>(a), bs = As<S>(b);
          std::vector<A> cs = As<A>(c);
          Be()->GemmTo(DtOf<S>(), DtOf<A>(), ta, tb, m, n, k, 1.25, as.data(), lda, bs.data(), ldb,
                       beta, cs.data(), ldc);
          return Outputs{{}, {D(cs)}};
        });
      }
    }
  }
}

// GemmBias adds the bias to the f32 products and rounds once: the f32 run's output
// rounded. Gemm then AddBias in bf16 rounds twice and fails this (the bias is of the
// products' size, so the first rounding's error often survives the second).
TEST(Bf16Ops, GemmBiasRoundsOnce) {
  std::mt19937 rng(5);
  const int64_t m = 13, n = 24, k = 64, ld_pad = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t lda = (ta ? m : k) + ld_pad, ldb = (tb ? k : n) + ld_pad;
      const std::vector<double> a = Bf16Values(rng, (ta ? k : m) * lda),
                                b = Bf16Values(rng, (tb ? n : k) * ldb),
                                bias = Bf16Values(rng, n, -4.0, 4.0);
      CheckOp(std::string("GemmBias ta=") + (ta ? "1" : "0") + " tb=" + (tb ? "1" : "0"),
              [&](auto tag) {
                using S = decltype(tag);
                std::vector<S> as = As<S>(a), bs = As<S>(b), biases = As<S>(bias),
                               cs = As<S>(Nans(m * n));
                Be()->GemmBias(DtOf<S>(), ta, tb, m, n, k, as.data(), lda, bs.data(), ldb,
                               biases.data(), cs.data());
                return Outputs{{D(cs)}, {}};
              });
    }
  }
}

// The experts' projections with the gates fused in: h, hs, dh are the f32 run's outputs
// rounded once, dg the f32 run's (dhs is never rounded to bf16 on the way). A GEMM
// rounded to bf16 and then scaled rounds twice and fails the check on hs and dh; dg from
// bf16-rounded dhs fails it too. Also without gates (plain LoRA: hs = alpha * p, dh =
// alpha * q, h not written).
TEST(Bf16Ops, ExpertsRoundOnce) {
  std::mt19937 rng(6);
  const int64_t rows = 11, k = 40, d = 24, blocks = 3, width = 8, cols = blocks * width;
  const std::vector<double> x = Bf16Values(rng, rows * k), a = Bf16Values(rng, cols * k),
                            g = Bf16Values(rng, rows * blocks, 0, 1),
                            dy = Bf16Values(rng, rows * d), b = Bf16Values(rng, d * cols),
                            h = Bf16Values(rng, rows * cols);
  for (bool gated : {true, false}) {
    CheckOp(gated ? "ExpertsDown" : "ExpertsDown without gates", [&](auto tag) {
      using S = decltype(tag);
      std::vector<S> xs = As<S>(x), as = As<S>(a), gs = As<S>(g), hs(rows * cols),
                     out(rows * cols);
      Be()->ExpertsDown(DtOf<S>(), xs.data(), as.data(), gated ? gs.data() : nullptr, rows, k,
                        blocks, width, 0.75, gated ? hs.data() : nullptr, out.data());
      if (!gated) return Outputs{{D(out)}, {}};
      return Outputs{{D(hs), D(out)}, {}};
    });
    CheckOp(gated ? "ExpertsUpBackward" : "ExpertsUpBackward without gates", [&](auto tag) {
      using S = decltype(tag);
      std::vector<S> dys = As<S>(dy), bs = As<S>(b), hs = As<S>(h), gs = As<S>(g),
                     dh(rows * cols);
      std::vector<AccOf<S>> dg(rows * blocks);
      Be()->ExpertsUpBackward(DtOf<S>(), dys.data(), bs.data(), gated ? hs.data() : nullptr,
                              gated ? gs.data() : nullptr, rows, d, blocks, width, 0.75,
                              gated ? dg.data() : nullptr, dh.data());
      if (!gated) return Outputs{{D(dh)}, {}};
      return Outputs{{D(dh)}, {D(dg)}};
    });
  }
}

TEST(Bf16Ops, GemmToRefusesOtherCTypes) {
  std::vector<uint16_t> a(4), b(4), c(4);
  EXPECT_DEATH(Be()->GemmTo(DType::kBF16, DType::kF64, false, false, 2, 2, 2, 1.0, a.data(), 2,
                            b.data(), 2, 0.0, c.data(), 2),
               "C of F64 with A and B of BF16");
}

TEST(Bf16Ops, EmbeddingRmsNormRope) {
  std::mt19937 rng(4);
  const int64_t vocab = 10, dim = 16, n = 6;
  const std::vector<double> table = Bf16Values(rng, vocab * dim), dout = Bf16Values(rng, n * dim);
  const std::vector<int32_t> ids = {3, 9, 3, 0, 5, 3};
  CheckOp("Embedding", [&](auto tag) {
    using S = decltype(tag);
    std::vector<S> t = As<S>(table), out(n * dim), d = As<S>(dout), dt = As<S>(table);
    std::vector<AccOf<S>> dt_acc = As<AccOf<S>>(table);  // the weight gradient's table
    Be()->EmbeddingForward(DtOf<S>(), t.data(), ids.data(), n, dim, out.data());
    Be()->EmbeddingBackward(DtOf<S>(), DtOf<S>(), d.data(), ids.data(), n, dim, dt.data());
    Be()->EmbeddingBackward(DtOf<S>(), DtOf<AccOf<S>>(), d.data(), ids.data(), n, dim,
                            dt_acc.data());
    return Outputs{{D(out), D(dt)}, {D(dt_acc)}};
  });
  const int64_t rows = 5, h = 48;
  const std::vector<double> x = Bf16Values(rng, rows * h, -2, 2), w = Bf16Values(rng, h, 0.5, 1.5),
                            dy = Bf16Values(rng, rows * h), dw0 = Bf16Values(rng, h);
  std::vector<double> inv_rms(rows);  // an exact f32 input for the backward
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < h; ++j) ss += x[r * h + j] * x[r * h + j];
    inv_rms[r] = static_cast<float>(1.0 / std::sqrt(ss / h + 1e-6));
  }
  CheckOp("RmsNorm", [&](auto tag) {
    using S = decltype(tag);
    using A = AccOf<S>;
    std::vector<S> xs = As<S>(x), ws = As<S>(w), y(rows * h), dys = As<S>(dy), dx(rows * h);
    std::vector<A> r(rows), r_in = As<A>(inv_rms), dws = As<A>(dw0);  // dw: AccumDType
    Be()->RmsNormForward(DtOf<S>(), xs.data(), nullptr, ws.data(), 1e-6, rows, h, nullptr,
                         y.data(), r.data());
    Be()->RmsNormBackward(DtOf<S>(), xs.data(), ws.data(), r_in.data(), dys.data(), nullptr,
                          rows, h, dx.data(), dws.data());
    return Outputs{{D(y), D(dx)}, {D(r), D(dws)}};
  });
  // With the skip path's gradient added before the one rounding of dx (dx in place of it
  // the second time).
  std::mt19937 rng_skip(7);  // its own stream: the inputs of the checks below stay as they were
  const std::vector<double> dskip = Bf16Values(rng_skip, rows * h);
  CheckOp("RmsNormBackward with residual_grad", [&](auto tag) {
    using S = decltype(tag);
    using A = AccOf<S>;
    std::vector<S> xs = As<S>(x), ws = As<S>(w), dys = As<S>(dy), ds = As<S>(dskip),
                   dx = As<S>(Nans(rows * h)), dx_in_place = As<S>(dskip);
    std::vector<A> r_in = As<A>(inv_rms), dws = As<A>(dw0);
    Be()->RmsNormBackward(DtOf<S>(), xs.data(), ws.data(), r_in.data(), dys.data(), ds.data(),
                          rows, h, dx.data(), dws.data());
    Be()->RmsNormBackward(DtOf<S>(), xs.data(), ws.data(), r_in.data(), dys.data(),
                          dx_in_place.data(), rows, h, dx_in_place.data(), nullptr);
    EXPECT_EQ(D(dx_in_place), D(dx)) << "dx in place of residual_grad";
    return Outputs{{D(dx)}, {D(dws)}};
  });
  const int64_t tokens = 4, heads = 3, head_dim = 8, half = head_dim / 2;
  const std::vector<double> q = Bf16Values(rng, tokens * heads * head_dim);
  std::vector<double> cos(tokens * half), sin(tokens * half);
  for (int64_t p = 0; p < tokens; ++p) {
    for (int64_t j = 0; j < half; ++j) {
      const double angle = p * std::pow(10000.0, -2.0 * j / head_dim);
      cos[p * half + j] = static_cast<float>(std::cos(angle));
      sin[p * half + j] = static_cast<float>(std::sin(angle));
    }
  }
  const std::vector<int32_t> positions = {0, 3, 1, 2};
  for (bool inverse : {false, true}) {
    CheckOp(inverse ? "Rope inverse" : "Rope", [&](auto tag) {
      using S = decltype(tag);
      using A = AccOf<S>;
      std::vector<S> xs = As<S>(q);
      std::vector<A> c = As<A>(cos), s = As<A>(sin);
      Be()->ApplyRope(DtOf<S>(), xs.data(), tokens, heads, head_dim, c.data(), s.data(),
                      positions.data(), inverse);
      return Outputs{{D(xs)}, {}};
    });
  }
}

// RmsNormForward with a residual in bf16: s = x + residual is rounded to bf16 once and
// the norm reads that stored s, so sum_out, y and inv_rms are bit for bit Axpy then the
// op without a residual (checked against the f64 and f32 runs in EmbeddingRmsNormRope).
// And s itself is within half a bf16 ulp (2^-8 relative) of the exact sum.
TEST(Bf16Ops, RmsNormForwardWithResidualIsAxpyThenNorm) {
  std::mt19937 rng(6);
  const int64_t rows = 5, h = 48, n = rows * h;
  const std::vector<double> x = Bf16Values(rng, n, -2, 2), res = Bf16Values(rng, n),
                            w = Bf16Values(rng, h, 0.5, 1.5);
  const std::vector<Bf16> xs = As<Bf16>(x), rs = As<Bf16>(res), ws = As<Bf16>(w);
  std::vector<Bf16> s_ref = xs, y_ref(n);
  std::vector<float> r_ref(rows);
  Be()->Axpy(DType::kBF16, 1.0, rs.data(), s_ref.data(), n);
  Be()->RmsNormForward(DType::kBF16, s_ref.data(), nullptr, ws.data(), 1e-6, rows, h, nullptr,
                       y_ref.data(), r_ref.data());
  for (bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "sum_out = x" : "sum_out apart");
    std::vector<Bf16> x_copy = xs, s(n), y(n);
    std::vector<float> r(rows);
    Bf16* sum_out = in_place ? x_copy.data() : s.data();
    Be()->RmsNormForward(DType::kBF16, x_copy.data(), rs.data(), ws.data(), 1e-6, rows, h,
                         sum_out, y.data(), r.data());
    const std::vector<Bf16> got_s(sum_out, sum_out + n);
    EXPECT_EQ(D(got_s), D(s_ref)) << "sum_out";
    EXPECT_EQ(D(y), D(y_ref)) << "y";
    EXPECT_EQ(r, r_ref) << "inv_rms";
    std::vector<double> exact(n), bound(n);
    for (int64_t i = 0; i < n; ++i) {
      exact[i] = x[i] + res[i];
      bound[i] = 0x1p-8 * std::abs(exact[i]);  // half an ulp: u = 2^-8 relative
    }
    ExpectWithin(D(got_s), exact, bound, "sum_out against the exact sum");
  }
}

TEST(Bf16Ops, AttentionAndLogSoftmaxGather) {
  std::mt19937 rng(5);
  AttentionShape shape;
  shape.batch = 2;
  shape.seq = 5;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  shape.scale = 1.0 / std::sqrt(8.0);
  const int64_t q_size = 2 * 5 * 4 * 8, kv_size = 2 * 5 * 2 * 8, lse_size = 2 * 4 * 5;
  const std::vector<double> q = Bf16Values(rng, q_size, -2, 2), k = Bf16Values(rng, kv_size, -2, 2),
                            v = Bf16Values(rng, kv_size), dout = Bf16Values(rng, q_size);
  // The backward's saved out and lse: the f64 forward's, made exact bf16 and f32 values.
  std::vector<double> out(q_size), lse(lse_size);
  Be()->AttentionForward(DType::kF64, shape, q.data(), k.data(), v.data(), out.data(), lse.data());
  for (double& o : out) o = Bf16ToF32(F64ToBf16(o));
  for (double& l : lse) l = static_cast<float>(l);
  CheckOp("Attention", [&](auto tag) {
    using S = decltype(tag);
    using A = AccOf<S>;
    std::vector<S> qs = As<S>(q), ks = As<S>(k), vs = As<S>(v), o(q_size), os = As<S>(out),
                   d = As<S>(dout), dq(q_size), dk(kv_size), dv(kv_size);
    std::vector<A> l(lse_size), ls = As<A>(lse);
    Be()->AttentionForward(DtOf<S>(), shape, qs.data(), ks.data(), vs.data(), o.data(), l.data());
    Be()->AttentionBackward(DtOf<S>(), shape, qs.data(), ks.data(), vs.data(), os.data(),
                            ls.data(), d.data(), dq.data(), dk.data(), dv.data());
    return Outputs{{D(o), D(dq), D(dk), D(dv)}, {D(l)}};
  });

  const int64_t rows = 5, vocab = 50;
  const std::vector<double> logits = Bf16Values(rng, rows * vocab, -4, 4),
                            dlogp = RoundToF32(Uniform(rng, rows));
  const std::vector<int32_t> targets = {7, -1, 49, 0, 7};
  std::vector<double> lse_in(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t j = 0; j < vocab; ++j) s += std::exp(logits[r * vocab + j]);
    lse_in[r] = static_cast<float>(std::log(s));
  }
  CheckOp("LogSoftmaxGather", [&](auto tag) {
    using S = decltype(tag);
    using A = AccOf<S>;
    std::vector<S> z = As<S>(logits), dz(rows * vocab);
    std::vector<A> logp(rows), l(rows), l_in = As<A>(lse_in), dl = As<A>(dlogp);
    Be()->LogSoftmaxGather(DtOf<S>(), z.data(), targets.data(), rows, vocab, logp.data(), l.data());
    Be()->LogSoftmaxGatherBackward(DtOf<S>(), z.data(), targets.data(), l_in.data(), dl.data(),
                                   rows, vocab, dz.data());
    return Outputs{{D(dz)}, {D(logp), D(l)}};
  });
}

}  // namespace
}  // namespace pmol::testing
