// benchmarks/gemm_benchmark: the GEMMs of one PMoL-DPO training step's decoder layer, as
// pmol runs them (Backend::Gemm / GemmTo / GemmBias; on CUDA cuBLASLt, kernels/cuda/gemm.h),
// against PyTorch's on the same shapes in the same run
// (benchmarks/peers/torch_gemm_peer.py: F.linear, torch.mm, addmm_), and pmol's fused
// bias epilogue against its own unfused form (Gemm, then AddBias). Per GEMM: milliseconds,
// TFLOP/s (2 m n k FLOPs), and the ratio PyTorch / pmol (> 1: pmol faster).
//
// The layer is Qwen2.5-0.5B's (hidden 896, 14 query heads and 2 kv heads of 64, MLP 4864,
// q/k/v with biases) on --tokens rows (default 8192: 4 pairs x 2 replies x 1024 tokens),
// with PMoL's stacked experts (--expert_columns = experts x r = 6 x 8 = 48):
//   forward   y = x W^T (+ b)        q k v o gate up down     (ta=0, tb=1)
//   backward  dx (+)= dy W           the same weights         (ta=0, tb=0; k, v, up add)
//   experts   u = x A^T, y += u B^T  (forward);  dA = du^T x, dB = dy^T u into f32
//             (AccumDType gradients of the trained adapter: ta=1, tb=0)
// The frozen base has no weight gradients. PyTorch's dA and dB are bf16 (its autograd
// writes a gradient in the parameter's type): slightly less output traffic than pmol's f32.
// Then the router's gates fused into the experts' projections (Backend::ExpertsDown and
// ExpertsUpBackward; on CUDA in bf16 the tensor-core kernels of kernels/cuda/experts.cu)
// against the unfused ops they replace (Gemm, then ScaleColumnBlocks; Gemm, then
// ColumnBlockDots and ScaleColumnBlocks), per input width k (down) and output width d (up),
// with 6 gated blocks of expert_columns / 6.
//
// Usage (from the repository root): bazel-bin/benchmarks/gemm_benchmark [--device=cuda]
//   [--dtype=bf16|f32] [--tokens=8192] [--iters=20 --warmup=5] [--python=... --peer=...]
// benchmarks/gpu_train_benchmark.sh runs it on a GPU.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/peer_process.h"
#include "gflags/gflags.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "pmol/core/tensor.h"

DEFINE_string(device, "cuda", "cpu or cuda");
DEFINE_string(dtype, "bf16", "bf16 or f32");
DEFINE_int64(tokens, 8192, "rows of the activations (tokens in the step)");
DEFINE_int64(hidden, 896, "hidden size");
DEFINE_int64(kv_dim, 128, "key/value projection width (kv heads x head_dim)");
DEFINE_int64(mlp, 4864, "MLP intermediate size");
DEFINE_int64(expert_columns, 48, "stacked expert rank columns (experts x r)");
DEFINE_int32(iters, 20, "timed calls per GEMM");
DEFINE_int32(warmup, 5, "untimed calls first");
DEFINE_int32(threads, 0, "CPU backend threads (0: all cores)");
DEFINE_string(python, "/usr/bin/python3", "the Python that has torch (empty: no peer)");
DEFINE_string(peer, "benchmarks/peers/torch_gemm_peer.py", "the PyTorch peer");

namespace pmol {
namespace {

// C[m,n] (+)= op(A) op(B) (+ bias), as the peer reads it too.
struct GemmCase {
  std::string name;
  int64_t m, n, k;
  bool trans_a, trans_b;
  bool accumulate = false;  // beta = 1
  bool bias = false;        // GemmBias (no accumulate)
  bool f32_out = false;     // GemmTo into AccumDType(dt)
  double flop() const { return 2.0 * m * n * k; }
};

std::vector<GemmCase> LayerCases() {
  const int64_t t = FLAGS_tokens, h = FLAGS_hidden, kv = FLAGS_kv_dim, f = FLAGS_mlp,
                r = FLAGS_expert_columns;
  return {
      {"fwd q (+bias)", t, h, h, false, true, false, true},
      {"fwd k (+bias)", t, kv, h, false, true, false, true},
      {"fwd o", t, h, h, false, true},
      {"fwd gate/up", t, f, h, false, true},
      {"fwd down", t, h, f, false, true},
      {"dx q", t, h, h, false, false},
      {"dx k (+=)", t, h, kv, false, false, true},
      {"dx o", t, h, h, false, false},
      {"dx up (+=)", t, h, f, false, false, true},
      {"dx down", t, f, h, false, false},
      {"experts u = x A^T", t, r, h, false, true},
      {"experts y += u B^T", t, h, r, false, true, true},
      {"experts dA = du^T x", r, h, t, true, false, false, false, true},
      {"experts dB = dy^T u", h, r, t, true, false, false, false, true},
  };
}

// How many of each GEMM a layer's step runs (gate and up share a row, k and v too).
int TimesPerLayer(const GemmCase& c) {
  if (c.name == "fwd k (+bias)" || c.name == "fwd gate/up" || c.name == "dx k (+=)" ||
      c.name == "dx up (+=)") {
    return 2;
  }
  return 1;
}

double MsSince(std::chrono::steady_clock::time_point since, int calls) {
  const std::chrono::duration<double, std::milli> d = std::chrono::steady_clock::now() - since;
  return d.count() / calls;
}

// Milliseconds per call of fn, after the warm-up calls.
template <typename Fn>
double TimeCalls(Backend* be, Fn fn) {
  for (int i = 0; i < FLAGS_warmup; ++i) fn();
  be->Synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < FLAGS_iters; ++i) fn();
  be->Synchronize();
  return MsSince(start, FLAGS_iters);
}

Tensor Random(Backend* be, DType dt, int64_t rows, int64_t cols, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(rows * cols);
  for (double& x : v) x = dist(rng);
  return Tensor::FromHost(v.data(), {rows, cols}, DType::kF64, be).ConvertTo(dt);
}

// pmol's time per call for one case; unfused: a bias case as Gemm then AddBias.
double TimePmol(Backend* be, DType dt, const GemmCase& c, bool unfused) {
  std::mt19937_64 rng(11);
  const Tensor a = c.trans_a ? Random(be, dt, c.k, c.m, rng) : Random(be, dt, c.m, c.k, rng);
  const Tensor b = c.trans_b ? Random(be, dt, c.n, c.k, rng) : Random(be, dt, c.k, c.n, rng);
  const Tensor bias = Random(be, dt, 1, c.n, rng);
  Tensor out = Random(be, c.f32_out ? AccumDType(dt) : dt, c.m, c.n, rng);
  const int64_t lda = c.trans_a ? c.m : c.k, ldb = c.trans_b ? c.k : c.n;
  const auto call = [&] {
    if (c.bias && !unfused) {
      be->GemmBias(dt, c.trans_a, c.trans_b, c.m, c.n, c.k, a.data(), lda, b.data(), ldb,
                   bias.data(), out.data());
      return;
    }
    be->GemmTo(dt, out.dtype(), c.trans_a, c.trans_b, c.m, c.n, c.k, 1.0, a.data(), lda,
               b.data(), ldb, c.accumulate ? 1.0 : 0.0, out.data(), c.n);
    if (c.bias) be->AddBias(dt, out.data(), bias.data(), c.m, c.n);
  };
  return TimeCalls(be, call);
}

// The gated experts' ops, fused against unfused (see the file comment).
void PrintGatedExperts(Backend* be, DType dt) {
  const int64_t t = FLAGS_tokens, cols = FLAGS_expert_columns, blocks = 6;
  if (cols % blocks != 0) {
    std::printf("\ngated experts: skipped (expert_columns %lld is not 6 blocks)\n",
                (long long)cols);
    return;
  }
  const int64_t width = cols / blocks;
  std::mt19937_64 rng(12);
  const Tensor gates = Random(be, dt, t, blocks, rng);
  Tensor h = Random(be, dt, t, cols, rng), hs = Random(be, dt, t, cols, rng);
  Tensor dgates = Random(be, AccumDType(dt), t, blocks, rng);
  std::printf("\n%-28s %6s %6s %10s %8s %12s %8s\n", "gated experts", "rows", "k|d",
              "fused ms", "TFLOP/s", "unfused ms", "x fused");
  for (int64_t k : {FLAGS_hidden, FLAGS_mlp}) {
    const Tensor x = Random(be, dt, t, k, rng), a = Random(be, dt, cols, k, rng);
    const double fused = TimeCalls(be, [&] {
      be->ExpertsDown(dt, x.data(), a.data(), gates.data(), t, k, blocks, width, 2.0, h.data(),
                      hs.data());
    });
    const double unfused = TimeCalls(be, [&] {
      be->Gemm(dt, false, true, t, cols, k, 1.0, x.data(), k, a.data(), k, 0.0, h.data(), cols);
      be->ScaleColumnBlocks(dt, h.data(), gates.data(), t, blocks, width, 2.0, hs.data());
    });
    std::printf("%-28s %6lld %6lld %10.4f %8.2f %12.4f %8.2f\n", "down h, hs = gate(x A^T)",
                (long long)t, (long long)k, fused, 2.0 * t * cols * k / (fused * 1e9), unfused,
                unfused / fused);
  }
  for (int64_t d : {FLAGS_hidden, FLAGS_kv_dim, FLAGS_mlp}) {
    const Tensor dy = Random(be, dt, t, d, rng), b = Random(be, dt, d, cols, rng);
    Tensor dh = Random(be, dt, t, cols, rng);
    const double fused = TimeCalls(be, [&] {
      be->ExpertsUpBackward(dt, dy.data(), b.data(), h.data(), gates.data(), t, d, blocks, width,
                            2.0, dgates.data(), dh.data());
    });
    const double unfused = TimeCalls(be, [&] {
      be->Gemm(dt, false, false, t, cols, d, 1.0, dy.data(), d, b.data(), cols, 0.0, dh.data(),
               cols);
      be->ColumnBlockDots(dt, dh.data(), h.data(), t, blocks, width, 2.0, dgates.data());
      be->ScaleColumnBlocks(dt, dh.data(), gates.data(), t, blocks, width, 2.0, dh.data());
    });
    std::printf("%-28s %6lld %6lld %10.4f %8.2f %12.4f %8.2f\n", "up backward dh, dg (dy B)",
                (long long)t, (long long)d, fused, 2.0 * t * cols * d / (fused * 1e9), unfused,
                unfused / fused);
  }
  std::printf("x fused: the unfused ops' time over the fused op's (> 1: the fusion pays)\n");
}

// The peer's time per call for each case (NaN where it failed), and its description.
std::vector<double> TimePeer(const std::vector<GemmCase>& cases, std::string* what) {
  std::vector<double> ms(cases.size(), NAN);
  if (FLAGS_python.empty()) {
    *what = "not run";
    return ms;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const GemmCase& c : cases) {
    list.push_back({{"name", c.name}, {"m", c.m}, {"n", c.n}, {"k", c.k},
                    {"trans_a", c.trans_a}, {"trans_b", c.trans_b},
                    {"accumulate", c.accumulate}, {"bias", c.bias}});
  }
  const std::string cmd = FLAGS_python + " " + FLAGS_peer + " --dtype " + FLAGS_dtype +
                          " --device " + FLAGS_device + " --iters " +
                          std::to_string(FLAGS_iters) + " --warmup " +
                          std::to_string(FLAGS_warmup) + " --cases '" + list.dump() + "'";
  std::string error;
  const nlohmann::json j = bench::RunPeerJson(cmd, &error);
  if (!j.is_object()) {
    *what = error;
    return ms;
  }
  *what = "PyTorch " + j.value("torch", std::string("?"));
  const nlohmann::json& results = j["ms"];
  for (size_t i = 0; i < cases.size() && i < results.size(); ++i) {
    if (results[i].is_number()) ms[i] = results[i].get<double>();
  }
  return ms;
}

int Main() {
  const bool cuda = FLAGS_device == "cuda";
  if (FLAGS_dtype != "bf16" && FLAGS_dtype != "f32") {
    std::fprintf(stderr, "gemm_benchmark: --dtype must be bf16 or f32, not '%s'\n",
                 FLAGS_dtype.c_str());
    return 1;
  }
  absl::StatusOr<Backend*> backend =
      GetBackend(cuda ? DeviceType::kCuda : DeviceType::kCpu, FLAGS_threads);
  if (!backend.ok()) {
    std::fprintf(stderr, "gemm_benchmark: %s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  Backend* be = *backend;
  const DType dt = FLAGS_dtype == "bf16" ? DType::kBF16 : DType::kF32;
  const std::vector<GemmCase> cases = LayerCases();
  std::printf("one decoder layer's GEMMs in %s on %s: %lld tokens, hidden %lld, kv %lld, MLP "
              "%lld, expert columns %lld; %d timed calls after %d\n",
              FLAGS_dtype.c_str(), be->Name().c_str(), (long long)FLAGS_tokens,
              (long long)FLAGS_hidden, (long long)FLAGS_kv_dim, (long long)FLAGS_mlp,
              (long long)FLAGS_expert_columns, FLAGS_iters, FLAGS_warmup);
  std::vector<double> pmol_ms, unfused_ms(cases.size(), NAN);
  for (size_t i = 0; i < cases.size(); ++i) {
    pmol_ms.push_back(TimePmol(be, dt, cases[i], false));
    if (cases[i].bias) unfused_ms[i] = TimePmol(be, dt, cases[i], true);
  }
  std::string peer_what;
  const std::vector<double> peer_ms = TimePeer(cases, &peer_what);

  std::printf("\n%-22s %6s %6s %6s %10s %8s %10s %8s %8s %14s\n", "GEMM", "m", "n", "k",
              "pmol ms", "TFLOP/s", "torch ms", "TFLOP/s", "x torch", "unfused ms (x)");
  double layer_pmol = 0, layer_peer = 0, layer_flop = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const GemmCase& c = cases[i];
    std::printf("%-22s %6lld %6lld %6lld %10.4f %8.2f %10.4f %8.2f %8.2f", c.name.c_str(),
                (long long)c.m, (long long)c.n, (long long)c.k, pmol_ms[i],
                c.flop() / (pmol_ms[i] * 1e9), peer_ms[i], c.flop() / (peer_ms[i] * 1e9),
                peer_ms[i] / pmol_ms[i]);
    if (c.bias) std::printf(" %8.4f (%.2f)", unfused_ms[i], unfused_ms[i] / pmol_ms[i]);
    std::printf("\n");
    const int times = TimesPerLayer(c);
    layer_pmol += times * pmol_ms[i];
    layer_peer += times * peer_ms[i];
    layer_flop += times * c.flop();
  }
  std::printf("\nper layer (gate/up and k/v counted twice): pmol %.3f ms (%.2f TFLOP/s), "
              "%s %.3f ms (%.2f TFLOP/s): pmol x%.2f\n",
              layer_pmol, layer_flop / (layer_pmol * 1e9), peer_what.c_str(), layer_peer,
              layer_flop / (layer_peer * 1e9), layer_peer / layer_pmol);
  std::printf("bias epilogue: 'unfused ms (x)' is pmol's Gemm then AddBias, and x its time "
              "over the fused GemmBias (> 1: the epilogue pays)\n");
  PrintGatedExperts(be, dt);
  return 0;
}

}  // namespace
}  // namespace pmol

int main(int argc, char** argv) {
  gflags::SetUsageMessage("a decoder layer's GEMMs: pmol against PyTorch (see the file comment)");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pmol::Main();
}
