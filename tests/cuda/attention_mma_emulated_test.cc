// The bf16 tensor-core attention kernels (kernels/cuda/attention_mma_kernels.cuh), their
// very source, run on the CPU under the SIMT emulation of simt_emulation/ and compared
// with an f64 attention written here (forward out and lse; backward dq, dk, dv from the
// kernels' own out and lse, with Delta = dot(dout, out) summed in f32 as the GPU's delta
// kernel does). This checks the kernels' logic on every build machine: tile loads and
// their transposes, the fragment bookkeeping of each product, the causal mask and key
// holes (including whole tiles skipped), GQA, the online softmax, rows past the sequence
// end, and that every output element is written. What only a GPU can confirm (that the
// hardware's mma follows the documented fragment layouts, timing, memory) is in
// tests/cuda/cuda_backend_test.cc, run by tests/gpu/run.sh.
//
// Tolerances, per tensor against the f64 reference on the same bf16 inputs:
//   out, dq, dk, dv: |got - ref| <= 1e-2 * max(max|ref|, 1e-4). Each output is rounded to bf16 once
//     (2^-9 = 2.0e-3 of its value at most), and P (forward, dV) and dS (dK, dQ) are
//     rounded to bf16 before their products (2^-9 relative per term, of sums bounded by
//     the output's scale); sums are f32. Measured: at most 4.9e-3 of max|ref|. A wrong
//     fragment index, mask or rescale gives errors of order max|ref|.
//   lse (f32): |got - ref| <= 1e-5 * max(1, |ref|); the scores are exact products of bf16
//     values summed in f32. Measured: at most 1.5e-7 relative.
#define PMOL_CUDA_SIMT_EMULATION 1

#include <cuda_runtime.h>  // simt_emulation/cuda_runtime.h

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/dtype.h"

namespace pmol::cuda {
// The buffer behind the kernels' dynamic shared memory (simt_emulation.h); the sm_90
// opt-in limit per block.
constexpr size_t kSharedCapacity = 227 * 1024;
alignas(16) unsigned char shared_buffer[kSharedCapacity];
}  // namespace pmol::cuda

#include "kernels/cuda/attention_mma_kernels.cuh"

namespace pmol {
namespace {

using cuda::kMmaThreads;
using cuda::kMmaTile;

struct Case {
  int64_t batch, seq, q_heads, kv_heads;
  int head_dim;
  // Key holes when reply_a > 0: row b is [prefix + b | reply A of reply_a | reply B],
  // reply B's queries not seeing reply A.
  int64_t prefix = 0, reply_a = 0;

  std::string Describe() const {
    return "B=" + std::to_string(batch) + " T=" + std::to_string(seq) +
           " Hq=" + std::to_string(q_heads) + " Hkv=" + std::to_string(kv_heads) +
           " D=" + std::to_string(head_dim) +
           (reply_a > 0 ? " holes(prefix=" + std::to_string(prefix) +
                              ", A=" + std::to_string(reply_a) + ")"
                        : std::string());
  }
  std::vector<int32_t> KeyHoles() const {
    std::vector<int32_t> holes;
    if (reply_a == 0) return holes;
    holes.assign(2 * batch * seq, 0);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = prefix + b + reply_a; i < seq; ++i) {
        holes[2 * (b * seq + i)] = static_cast<int32_t>(prefix + b);
        holes[2 * (b * seq + i) + 1] = static_cast<int32_t>(prefix + b + reply_a);
      }
    }
    return holes;
  }
};

std::vector<Bf16> RandomBf16(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<Bf16> v(n);
  for (Bf16& x : v) x = dist(rng);
  return v;
}

std::vector<double> Widen(const std::vector<Bf16>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// The f64 reference: forward (out, lse) and backward (dq, dk, dv), [B, T, H, D] layouts.
struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};
Reference Attention(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>& dout,
                    const std::vector<int32_t>& holes) {
  const int64_t T = c.seq, D = c.head_dim, group = c.q_heads / c.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Reference r;
  r.out.assign(q.size(), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(k.size(), 0.0);
  r.lse.assign(c.batch * c.q_heads * T, 0.0);
  const auto qi = [&](int64_t b, int64_t t, int64_t h) { return ((b * T + t) * c.q_heads + h) * D; };
  const auto ki = [&](int64_t b, int64_t t, int64_t h) { return ((b * T + t) * c.kv_heads + h) * D; };
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.q_heads; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(i + 1, -INFINITY);
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          const bool hidden = !holes.empty() && j != i && j >= holes[2 * (b * T + i)] &&
                              j < holes[2 * (b * T + i) + 1];
          if (hidden) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += q[qi(b, i, h) + d] * k[ki(b, j, hk) + d];
          s[j] = scale * dot;
          m = std::max(m, s[j]);
        }
        double l = 0.0;
        for (int64_t j = 0; j <= i; ++j) l += std::exp(s[j] - m);
        r.lse[(b * c.q_heads + h) * T + i] = m + std::log(l);
        std::vector<double> p(i + 1);
        for (int64_t j = 0; j <= i; ++j) p[j] = std::exp(s[j] - m) / l;
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t d = 0; d < D; ++d) r.out[qi(b, i, h) + d] += p[j] * v[ki(b, j, hk) + d];
        }
        double delta = 0.0;
        for (int64_t d = 0; d < D; ++d) delta += dout[qi(b, i, h) + d] * r.out[qi(b, i, h) + d];
        for (int64_t j = 0; j <= i; ++j) {
          if (p[j] == 0.0) continue;
          double dp = 0.0;
          for (int64_t d = 0; d < D; ++d) dp += dout[qi(b, i, h) + d] * v[ki(b, j, hk) + d];
          const double ds = p[j] * (dp - delta);
          for (int64_t d = 0; d < D; ++d) {
            r.dv[ki(b, j, hk) + d] += p[j] * dout[qi(b, i, h) + d];
            r.dk[ki(b, j, hk) + d] += scale * ds * q[qi(b, i, h) + d];
            r.dq[qi(b, i, h) + d] += scale * ds * k[ki(b, j, hk) + d];
          }
        }
      }
    }
  }
  return r;
}

template <typename T>
void ExpectWithin(const std::vector<T>& got, const std::vector<double>& want, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  // The 1e-4 floor: a gradient that is zero in exact arithmetic (a single visible key:
  // dS = P (dP - Delta) with dP = Delta) comes out as f32 cancellation noise, ~1e-7.
  double max_ref = 1e-4;
  for (double w : want) max_ref = std::max(max_ref, std::fabs(w));
  double worst = 0.0;
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= tol * max_ref)) ++bad;  // NaN (an element never written) counts as bad
    if (err > worst) worst = err;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.size()
                    << " elements off; worst error " << worst << " against max|ref| "
                    << max_ref << " (tolerance " << tol << " of it)";
  std::cout << "[   INFO   ] " << what << ": worst error " << worst / max_ref
            << " of max|ref| " << max_ref << "\n";
}

template <int kD>
void CheckCase(const Case& c, std::mt19937& rng) {
  const std::string what = c.Describe();
  const int64_t q_size = c.batch * c.seq * c.q_heads * kD;
  const int64_t kv_size = c.batch * c.seq * c.kv_heads * kD;
  const int64_t lse_size = c.batch * c.q_heads * c.seq;
  const std::vector<Bf16> q = RandomBf16(rng, q_size, -2.0f, 2.0f);
  const std::vector<Bf16> k = RandomBf16(rng, kv_size, -2.0f, 2.0f);
  const std::vector<Bf16> v = RandomBf16(rng, kv_size, -1.0f, 1.0f);
  const std::vector<Bf16> dout = RandomBf16(rng, q_size, -1.0f, 1.0f);
  const std::vector<int32_t> holes = c.KeyHoles();
  const int32_t* key_holes = holes.empty() ? nullptr : holes.data();
  const Reference ref = Attention(c, Widen(q), Widen(k), Widen(v), Widen(dout), holes);

  Bf16 nan;
  nan.bits = 0x7fc0;
  std::vector<Bf16> out(q_size, nan), dq(q_size, nan), dk(kv_size, nan), dv(kv_size, nan);
  std::vector<float> lse(lse_size, NAN), delta(lse_size, NAN);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kD));
  const float scale_f = static_cast<float>(scale);
  const float scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  const unsigned tiles = static_cast<unsigned>((c.seq + kMmaTile - 1) / kMmaTile);
  const auto launch = [&](dim3 grid, size_t shared_bytes, auto kernel) {
    ASSERT_TRUE(simt::Launch(grid, kMmaThreads, cuda::shared_buffer, cuda::kSharedCapacity,
                             shared_bytes, kernel))
        << what << ": shared memory " << shared_bytes << " bytes";
  };

  launch(dim3(tiles, c.q_heads, c.batch), cuda::ForwardMmaSharedBytes<kD>(), [&] {
    cuda::AttentionForwardMmaKernel<kD>(q.data(), k.data(), v.data(), key_holes, out.data(),
                                        lse.data(), c.seq, c.q_heads, c.kv_heads, scale_log2);
  });
  ExpectWithin(out, ref.out, 1e-2, "out " + what);
  for (size_t i = 0; i < lse.size(); ++i) {
    EXPECT_LE(std::fabs(lse[i] - ref.lse[i]), 1e-5 * std::max(1.0, std::fabs(ref.lse[i])))
        << "lse " << what << " at " << i << ": " << lse[i] << " against " << ref.lse[i];
  }

  for (int64_t row = 0; row < c.batch * c.seq * c.q_heads; ++row) {  // [b, t, h] -> [b, h, t]
    float acc = 0.0f;
    for (int d = 0; d < kD; ++d) acc += static_cast<float>(out[row * kD + d]) * dout[row * kD + d];
    const int64_t h = row % c.q_heads, t = (row / c.q_heads) % c.seq, b = row / (c.q_heads * c.seq);
    delta[(b * c.q_heads + h) * c.seq + t] = acc;
  }
  launch(dim3(tiles, c.kv_heads, c.batch), cuda::DkDvMmaSharedBytes<kD>(), [&] {
    cuda::AttentionDkDvMmaKernel<kD>(q.data(), k.data(), v.data(), key_holes, lse.data(),
                                     delta.data(), dout.data(), dk.data(), dv.data(), c.seq,
                                     c.q_heads, c.kv_heads, scale_f, scale_log2);
  });
  launch(dim3(tiles, c.q_heads, c.batch), cuda::DqMmaSharedBytes<kD>(), [&] {
    cuda::AttentionDqMmaKernel<kD>(q.data(), k.data(), v.data(), key_holes, lse.data(),
                                   delta.data(), dout.data(), dq.data(), c.seq, c.q_heads,
                                   c.kv_heads, scale_f, scale_log2);
  });
  ExpectWithin(dq, ref.dq, 1e-2, "dq " + what);
  ExpectWithin(dk, ref.dk, 1e-2, "dk " + what);
  ExpectWithin(dv, ref.dv, 1e-2, "dv " + what);
}

TEST(AttentionMmaEmulated, ForwardAndBackwardMatchTheF64Reference) {
  std::mt19937 rng(20261125);
  const Case cases[] = {
      // Several query and key tiles, the last one partial; GQA 2.
      {2, 150, 4, 2, 64},
      // Holes inside and across tiles.
      {2, 150, 4, 2, 64, 20, 70},
      // A hole covering the whole key tile [64, 128) for the queries after it (skipped).
      {2, 200, 2, 1, 32, 10, 150},
      // head_dim 128, the Qwen2.5 GQA group of 7, a sequence shorter than one tile.
      {1, 70, 2, 1, 128},
      {1, 40, 7, 1, 64},
      // Exactly one tile; a single query.
      {1, 64, 2, 2, 32},
      {3, 1, 2, 1, 64},
  };
  for (const Case& c : cases) {
    switch (c.head_dim) {
      case 32: CheckCase<32>(c, rng); break;
      case 64: CheckCase<64>(c, rng); break;
      case 128: CheckCase<128>(c, rng); break;
      default: FAIL() << "no such kernel: " << c.Describe();
    }
  }
}

// The launchers take only head_dim 32, 64 or 128 and 16-byte aligned tensors (the
// kernels move rows 8 bf16 at a time); anything else runs on the scalar kernels.
TEST(AttentionMmaEmulated, TensorCoresApplyToSupportedHeadDimsAndAlignedTensors) {
  alignas(16) static unsigned char buffer[64];
  const auto dims = [](int64_t head_dim) {
    return cuda::AttentionDims{1, 8, 2, 1, head_dim, 0.125, nullptr};
  };
  for (int64_t head_dim : {32, 64, 128}) {
    EXPECT_TRUE(cuda::TensorCoreAttentionApplies(dims(head_dim), {buffer, buffer + 16}));
    EXPECT_FALSE(cuda::TensorCoreAttentionApplies(dims(head_dim), {buffer, buffer + 8}));
  }
  for (int64_t head_dim : {16, 24, 80, 96, 256}) {
    EXPECT_FALSE(cuda::TensorCoreAttentionApplies(dims(head_dim), {buffer}));
  }
}

}  // namespace
}  // namespace pmol
