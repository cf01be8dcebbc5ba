// benchmarks/attention_benchmark: pmol's causal grouped-query attention
// (Backend::AttentionForward / AttentionBackward) against PyTorch's in the same run
// (benchmarks/peers/torch_attention_peer.py: SDPA; on CUDA one row with PyTorch's own
// choice of kernel and one per kernel forced by --sdpa_backends: cuDNN's fused attention
// and FlashAttention-2), per dtype: milliseconds per forward and per forward +
// backward, TFLOP/s, peak memory, and the ratios pmol / PyTorch. On CUDA, bf16 with
// head_dim 32/64/128 runs pmol's tensor-core kernels (kernels/cuda/attention_mma*), f32
// the scalar ones.
//
// FLOPs (the same count for both sides): the forward multiplies Q K^T and P V over the
// T(T+1)/2 visible pairs of each (sequence, query head): 2 products x 2 D FLOPs per pair,
//   F_fwd = 4 B Hq D T(T+1)/2;
// the backward is counted as 2.5 F_fwd (dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q,
// plus the recomputed S: FlashAttention-2's convention), so F_fwd+bwd = 3.5 F_fwd. pmol's
// dQ kernel recomputes S and dP once more (deterministic, no atomics), work not counted.
// Times are wall-clock over --iters calls after --warmup, synchronised with the device.
// As a sanity check each pmol dtype's output is compared with pmol's f32 output.
//
// Usage (from the repository root): bazel-bin/benchmarks/attention_benchmark
//   [--device=cuda] [--dtypes=bf16,f32] [--batch=4 --seq=1024 --q_heads=14 --kv_heads=2
//   --head_dim=64] [--iters=20 --warmup=3] [--python=... --peer=...]
//   [--sdpa_backends=default,cudnn,flash]
// Defaults: a Qwen2.5-0.5B layer's attention (14 query heads, 2 kv heads, head_dim 64) on
// 4 sequences of 1024 tokens. benchmarks/gpu_train_benchmark.sh runs it on a GPU.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "benchmarks/peer_process.h"
#include "gflags/gflags.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "pmol/core/tensor.h"

DEFINE_string(device, "cuda", "cpu or cuda");
DEFINE_string(dtypes, "bf16,f32", "comma-separated: bf16, f32");
DEFINE_int64(batch, 4, "sequences");
DEFINE_int64(seq, 1024, "tokens per sequence");
DEFINE_int64(q_heads, 14, "query heads");
DEFINE_int64(kv_heads, 2, "key/value heads");
DEFINE_int64(head_dim, 64, "head dimension");
DEFINE_int32(iters, 20, "timed calls");
DEFINE_int32(warmup, 3, "untimed calls first");
DEFINE_int32(threads, 0, "CPU backend threads (0: all cores)");
DEFINE_string(python, "/usr/bin/python3", "the Python that has torch (empty: no peer)");
DEFINE_string(peer, "benchmarks/peers/torch_attention_peer.py", "the PyTorch peer");
DEFINE_string(sdpa_backends, "default,cudnn,flash",
              "on cuda, the peer's SDPA kernels, one row each: default (PyTorch's choice), "
              "cudnn (cuDNN's fused attention), flash, efficient");

namespace pmol {
namespace {

struct Row {
  std::string name, what;
  double forward_ms = NAN, forward_backward_ms = NAN;
  double peak_mib = NAN;
};

double Ms(std::chrono::steady_clock::time_point since, int calls) {
  const std::chrono::duration<double, std::milli> d = std::chrono::steady_clock::now() - since;
  return d.count() / calls;
}

std::vector<double> Uniform(std::mt19937_64& rng, int64_t n, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// pmol's attention in dtype dt: times, peak memory, and the forward output (as doubles).
Row RunPmol(Backend* be, DType dt, std::vector<double>* out_values) {
  const int64_t B = FLAGS_batch, T = FLAGS_seq, Hq = FLAGS_q_heads, Hkv = FLAGS_kv_heads,
                D = FLAGS_head_dim;
  std::mt19937_64 rng(7);
  const auto upload = [&](const std::vector<double>& v, const Shape& shape) {
    return Tensor::FromHost(v.data(), shape, DType::kF64, be).ConvertTo(dt);
  };
  const Tensor q = upload(Uniform(rng, B * T * Hq * D, -2, 2), {B, T, Hq, D});
  const Tensor k = upload(Uniform(rng, B * T * Hkv * D, -2, 2), {B, T, Hkv, D});
  const Tensor v = upload(Uniform(rng, B * T * Hkv * D, -1, 1), {B, T, Hkv, D});
  const Tensor dout = upload(Uniform(rng, B * T * Hq * D, -1, 1), {B, T, Hq, D});
  Tensor out = Tensor::Empty({B, T, Hq, D}, dt, be);
  Tensor lse = Tensor::Empty({B, Hq, T}, AccumDType(dt), be);
  Tensor dq = Tensor::Empty({B, T, Hq, D}, dt, be);
  Tensor dk = Tensor::Empty({B, T, Hkv, D}, dt, be);
  Tensor dv = Tensor::Empty({B, T, Hkv, D}, dt, be);
  AttentionShape shape;
  shape.batch = B;
  shape.seq = T;
  shape.q_heads = Hq;
  shape.kv_heads = Hkv;
  shape.head_dim = D;
  shape.scale = 1.0 / std::sqrt(static_cast<double>(D));
  const auto forward = [&] {
    be->AttentionForward(dt, shape, q.data(), k.data(), v.data(), out.data(), lse.data());
  };
  const auto forward_backward = [&] {
    forward();
    be->AttentionBackward(dt, shape, q.data(), k.data(), v.data(), out.data(), lse.data(),
                          dout.data(), dq.data(), dk.data(), dv.data());
  };
  const auto timed = [&](auto fn) {
    for (int i = 0; i < FLAGS_warmup; ++i) fn();
    be->Synchronize();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < FLAGS_iters; ++i) fn();
    be->Synchronize();
    return Ms(start, FLAGS_iters);
  };
  Row row;
  row.name = std::string("pmol-") + (dt == DType::kBF16 ? "bf16" : "f32");
  row.what = be->Name();
  row.forward_ms = timed(forward);
  be->ResetPeakMemory();
  row.forward_backward_ms = timed(forward_backward);
  row.peak_mib = be->GetMemoryStats().peak_in_use_bytes / 1048576.0;
  *out_values = out.ToDoubles();
  return row;
}

Row RunPeer(const std::string& dtype, const std::string& sdpa_backend) {
  Row row;
  row.name = std::string("pytorch-") + dtype + (sdpa_backend == "default" ? "" : "-" + sdpa_backend);
  const std::string cmd =
      FLAGS_python + " " + FLAGS_peer + " --batch " + std::to_string(FLAGS_batch) + " --seq " +
      std::to_string(FLAGS_seq) + " --q_heads " + std::to_string(FLAGS_q_heads) +
      " --kv_heads " + std::to_string(FLAGS_kv_heads) + " --head_dim " +
      std::to_string(FLAGS_head_dim) + " --iters " + std::to_string(FLAGS_iters) +
      " --warmup " + std::to_string(FLAGS_warmup) + " --dtype " +
      (dtype == "bf16" ? "bf16" : "float32") + " --device " + FLAGS_device +
      " --sdpa_backend " + sdpa_backend;
  std::string error;
  const nlohmann::json j = bench::RunPeerJson(cmd, &error);
  if (!j.is_object()) {
    row.what = error;
    return row;
  }
  row.what = "PyTorch " + j.value("torch", std::string("?")) + ", " +
             j.value("attention", std::string("?"));
  row.forward_ms = j.value("forward_ms", NAN);
  row.forward_backward_ms = j.value("forward_backward_ms", NAN);
  if (FLAGS_device == "cuda") row.peak_mib = j.value("peak_bytes", 0.0) / 1048576.0;
  return row;
}

int Main() {
  const bool cuda = FLAGS_device == "cuda";
  absl::StatusOr<Backend*> backend =
      GetBackend(cuda ? DeviceType::kCuda : DeviceType::kCpu, FLAGS_threads);
  if (!backend.ok()) {
    std::fprintf(stderr, "attention_benchmark: %s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  if (FLAGS_q_heads % FLAGS_kv_heads != 0) {
    std::fprintf(stderr, "attention_benchmark: --q_heads must be a multiple of --kv_heads\n");
    return 1;
  }
  const double pairs = FLAGS_seq * (FLAGS_seq + 1) / 2.0;
  const double fwd_flop = 4.0 * FLAGS_batch * FLAGS_q_heads * FLAGS_head_dim * pairs;
  const double fwd_bwd_flop = 3.5 * fwd_flop;
  std::printf("causal attention B=%lld T=%lld Hq=%lld Hkv=%lld D=%lld on %s; forward %.2f "
              "GFLOP, forward+backward %.2f GFLOP (3.5x); %d timed calls after %d\n",
              (long long)FLAGS_batch, (long long)FLAGS_seq, (long long)FLAGS_q_heads,
              (long long)FLAGS_kv_heads, (long long)FLAGS_head_dim, (*backend)->Name().c_str(),
              fwd_flop / 1e9, fwd_bwd_flop / 1e9, FLAGS_iters, FLAGS_warmup);

  std::vector<std::string> sdpa_backends = {"default"};
  if (cuda) sdpa_backends = absl::StrSplit(FLAGS_sdpa_backends, ',', absl::SkipEmpty());
  std::vector<std::pair<Row, std::vector<Row>>> rows;  // (pmol, peers) per dtype
  std::vector<double> f32_out;
  std::vector<std::pair<std::string, std::vector<double>>> outs;
  const std::vector<std::string> dtypes = absl::StrSplit(FLAGS_dtypes, ',', absl::SkipEmpty());
  for (const std::string& dtype : dtypes) {
    if (dtype != "bf16" && dtype != "f32") {
      std::fprintf(stderr, "attention_benchmark: --dtypes: unknown dtype '%s'\n", dtype.c_str());
      return 1;
    }
    std::vector<double> out;
    Row pm = RunPmol(*backend, dtype == "bf16" ? DType::kBF16 : DType::kF32, &out);
    outs.emplace_back(dtype, std::move(out));
    std::vector<Row> peers;
    for (const std::string& sdpa_backend : sdpa_backends) {
      // FlashAttention has no f32 kernel: not asked.
      if (dtype == "f32" && sdpa_backend == "flash") continue;
      peers.push_back(FLAGS_python.empty() ? Row{"pytorch-" + dtype, "not run"}
                                           : RunPeer(dtype, sdpa_backend));
    }
    rows.emplace_back(std::move(pm), std::move(peers));
  }

  std::printf("\n%-14s %11s %9s %13s %9s %10s  %s\n", "row", "forward ms", "TFLOP/s",
              "fwd+bwd ms", "TFLOP/s", "peak MiB", "what");
  const auto print = [&](const Row& r) {
    std::printf("%-14s %11.3f %9.2f %13.3f %9.2f %10.1f  %s\n", r.name.c_str(), r.forward_ms,
                fwd_flop / (r.forward_ms * 1e9), r.forward_backward_ms,
                fwd_bwd_flop / (r.forward_backward_ms * 1e9), r.peak_mib, r.what.c_str());
  };
  for (const auto& [pm, peers] : rows) {
    print(pm);
    for (const Row& peer : peers) print(peer);
  }
  std::printf("\nratios (speed, > 1: pmol faster; memory, < 1: pmol leaner):\n");
  for (const auto& [pm, peers] : rows) {
    for (const Row& peer : peers) {
      std::printf("  %s / %s: forward x%.2f, forward+backward x%.2f, peak memory x%.2f\n",
                  pm.name.c_str(), peer.name.c_str(), peer.forward_ms / pm.forward_ms,
                  peer.forward_backward_ms / pm.forward_backward_ms,
                  pm.peak_mib / peer.peak_mib);
    }
  }
  // Sanity: every dtype's output against the f32 one (bf16: ~1e-2 of the largest entry).
  const auto f32 = std::find_if(outs.begin(), outs.end(), [](const auto& o) { return o.first == "f32"; });
  if (f32 != outs.end()) {
    double max_ref = 0.0;
    for (double x : f32->second) max_ref = std::max(max_ref, std::fabs(x));
    for (const auto& [dtype, values] : outs) {
      if (dtype == "f32") continue;
      double worst = 0.0;
      for (size_t i = 0; i < values.size(); ++i) {
        const double err = std::fabs(values[i] - f32->second[i]);
        worst = std::isnan(err) ? INFINITY : std::max(worst, err);
      }
      std::printf("check: pmol-%s forward output against pmol-f32: max |diff| %.3g = %.2e of "
                  "max |f32| %.3g\n", dtype.c_str(), worst, worst / max_ref, max_ref);
    }
  }
  return 0;
}

}  // namespace
}  // namespace pmol

int main(int argc, char** argv) {
  gflags::SetUsageMessage("pmol's causal attention against PyTorch's (see the file comment)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pmol::Main();
}
