// Cost of PMoL adapters in one training step (forward + backward, no optimizer) of the
// ~20M-parameter Llama model (benchmarks/configs/llama_20m.json), and what pmol's parallel
// (stacked) expert computation saves over the per-expert loop of peer MoE-LoRA methods.
// All variants run on the same model, batch and thread count, interleaved step by step:
//   frozen        the frozen model alone: forward + backward to the embedding-output
//                 gradient (what DPO on a frozen base costs without adapters)
//   lora          PmolAdapters, kind kLora, rank r (reference point)
//   pmol_stacked  PmolAdapters, kind kPmol: what pmol runs. Per adapted module
//                 h = x A_all^T (ONE GEMM for all experts), hs = h * g * alpha/r per r-wide
//                 slice, y += hs B_all^T (ONE GEMM); the backward mirrors it.
//   pmol_loop     THE PEER: PerExpertLoopAdapters below, the per-expert loop of MixLoRA /
//                 LoRAMoE / MoLA / X-LoRA, on the SAME parameter tensors (expert e = rows
//                 [e r, (e+1) r) of lora_A, columns [e r, (e+1) r) of lora_B, addressed
//                 through GEMM leading dimensions, no copies) and the same router code
//                 (RouterForward / RouterBackward), so only the expert computation differs:
//                   forward:  for e: h_e = x A_e^T; hs_e = h_e * g[:, e] alpha/r; y += hs_e B_e^T
//                   backward: for e: dB_e += dy^T hs_e; dhs_e = dy B_e;
//                             dg[:, e] = alpha/r <dhs_e, h_e>; dh_e = dhs_e g[:, e] alpha/r;
//                             dA_e += dh_e^T x; dx += dh_e A_e
//                             then dz = RouterBackward(dg); dW_r += dz^T x; dx += dz W_r
// Before timing, pmol_loop is checked against pmol_stacked: logits, the input gradient and
// every adapter gradient must agree to max|a-b|/max|b| <= 1e-4 per tensor (f32), else abort.
// lora_B and the router are filled with random values (B = 0 at init would hide nothing in
// the cost, but makes the check vacuous; the router is widened so gates are not uniform).
//
// Reported per variant: median (and min) seconds per step over --steps interleaved steps
// after --warmup, tokens/s, the median time spent inside the adapter hook's Forward and
// Backward calls (measured by wrapping the LinearAdapters hook; the adapter-only view),
// the step time minus frozen's, the extra peak RSS of one step over the RSS before it
// (glibc trimmed, VmHWM reset via /proc/self/clear_refs; n/a where not allowed), and the
// adapter parameters + gradients. Then the ratios pmol_stacked/frozen, lora/frozen,
// pmol_loop/pmol_stacked (whole step and adapter-only).
//
// Usage (built optimised by .bazelrc's compilation_mode=opt):
//   bazel build //benchmarks:adapter_benchmark
//   ./bazel-bin/benchmarks/adapter_benchmark --threads=2 --batch=4 --seq=256 --steps=10
// Flags: --threads --batch --seq --steps --warmup --hf_config --rank --groups (e.g. "2,2,2")
//        --empty --variants (comma-separated subset) --device (cpu; cuda with --config=cuda).
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/process_memory.h"
#include "gflags/gflags.h"
#include "pmol/adapters/pmol_adapters.h"
#include "pmol/adapters/router.h"
#include "pmol/core/rng.h"
#include "pmol/model/llama_model.h"

DEFINE_int32(threads, 2, "CPU threads");
DEFINE_int32(batch, 4, "sequences per step");
DEFINE_int32(seq, 256, "tokens per sequence");
DEFINE_int32(steps, 10, "timed steps per variant (interleaved across variants)");
DEFINE_int32(warmup, 2, "untimed warm-up steps per variant");
DEFINE_string(hf_config, "benchmarks/configs/llama_20m.json", "the model's HF config.json");
DEFINE_int32(rank, 8, "LoRA rank r of every expert");
DEFINE_string(groups, "2,2,2", "experts per preference group");
DEFINE_int32(empty, 1, "empty experts");
DEFINE_string(variants, "frozen,lora,pmol_stacked,pmol_loop", "comma-separated subset");
DEFINE_string(device, "cpu", "cpu, or cuda (a --config=cuda build on a GPU machine)");

namespace pmol {
namespace {

const void* At(const Tensor& t, int64_t elements) {
  return static_cast<const char*>(t.data()) + elements * DTypeSize(t.dtype());
}
void* At(Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data()) + elements * DTypeSize(t.dtype());
}

// ---------------------------------------------------------------------------------------
// The per-expert-loop PEER (MixLoRA / LoRAMoE / MoLA / X-LoRA style): small GEMMs per
// expert on the parameters of a PmolAdapters (shared, not copied); its own gradients.
class PerExpertLoopAdapters final : public LinearAdapters {
 public:
  explicit PerExpertLoopAdapters(PmolAdapters* params) : params_(params) {
    for (AdaptedModule& am : params_->modules()) {
      PMOL_CHECK(am.spec.has_router && am.spec.top_k == 0);
      PmolLinearParams g;
      g.lora_A = Tensor::Zeros(am.params.lora_A.shape(), am.params.lora_A.dtype(),
                               am.params.lora_A.backend());
      g.lora_B = Tensor::Zeros(am.params.lora_B.shape(), am.params.lora_B.dtype(),
                               am.params.lora_B.backend());
      g.router = Tensor::Zeros(am.params.router.shape(), am.params.router.dtype(),
                               am.params.router.backend());
      grads_.push_back(std::move(g));
    }
    caches_.resize(grads_.size());
    for (size_t i = 0; i < params_->modules().size(); ++i) {
      const AdaptedModule& am = params_->modules()[i];
      const int64_t key = am.layer * kNumLinearModules + static_cast<int>(am.module);
      if (key >= static_cast<int64_t>(index_.size())) index_.resize(key + 1, -1);
      index_[key] = static_cast<int>(i);
    }
  }

  std::vector<PmolLinearParams>& grads() { return grads_; }
  void ZeroGrads() {
    for (PmolLinearParams& g : grads_) {
      g.lora_A.SetZero();
      g.lora_B.SetZero();
      g.router.SetZero();
    }
  }

  bool Adapts(int64_t layer, LinearModule m) const override {
    return params_->Adapts(layer, m);
  }

  void Forward(int64_t layer, LinearModule m, const Tensor& x, Tensor& y) override {
    const int i = Index(layer, m);
    const AdaptedModule& am = params_->modules()[i];
    const PmolLinearSpec& s = am.spec;
    Cache& c = caches_[i];
    Backend* be = x.backend();
    const DType dt = x.dtype();
    const int64_t n = x.dim(0), r = s.layout.rank, experts = s.layout.num_experts();
    const int64_t er = experts * r;
    // Router: identical code to pmol_stacked's (one GEMM, RouterForward on the host).
    Tensor z = Tensor::Empty({n, s.layout.num_slots()}, dt, be);
    be->Gemm(dt, false, true, n, z.dim(1), s.d_in, 1.0, x.data(), s.d_in,
             am.params.router.data(), s.d_in, 0.0, z.data(), z.dim(1));
    RouterForward(s.layout, s.temperature, s.top_k, s.capacity_factor, z.ToDoubles(), n, &c.router);
    // Per-expert gate columns g[:, e], contiguous ([E, N]) for the per-expert scaling.
    std::vector<double> gt(experts * n);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t e = 0; e < experts; ++e) gt[e * n + t] = c.router.gates[t * experts + e];
    c.gates_t = Tensor::FromHost(gt.data(), {experts, n}, DType::kF64, be).ConvertTo(dt);
    c.h.clear();
    Tensor hs = Tensor::Empty({n, r}, dt, be);
    for (int64_t e = 0; e < experts; ++e) {
      Tensor h = Tensor::Empty({n, r}, dt, be);
      // h_e = x A_e^T; A_e = rows [e r, (e+1) r) of lora_A.
      be->Gemm(dt, false, true, n, r, s.d_in, 1.0, x.data(), s.d_in,
               At(am.params.lora_A, e * r * s.d_in), s.d_in, 0.0, h.data(), r);
      // hs_e = h_e * g[:, e] * alpha/r
      be->ScaleColumnBlocks(dt, h.data(), At(c.gates_t, e * n), n, 1, r, s.scaling, hs.data());
      // y += hs_e B_e^T; B_e = columns [e r, (e+1) r) of lora_B (leading dimension E r).
      be->Gemm(dt, false, true, n, s.d_out, r, 1.0, hs.data(), r,
               At(am.params.lora_B, e * r), er, 1.0, y.data(), s.d_out);
      c.h.push_back(std::move(h));
    }
  }

  void Backward(int64_t layer, LinearModule m, const Tensor& x, const Tensor& dy,
                Tensor& dx) override {
    const int i = Index(layer, m);
    const AdaptedModule& am = params_->modules()[i];
    const PmolLinearSpec& s = am.spec;
    PmolLinearParams& g = grads_[i];
    Cache& c = caches_[i];
    Backend* be = x.backend();
    const DType dt = x.dtype();
    const int64_t n = x.dim(0), r = s.layout.rank, experts = s.layout.num_experts();
    const int64_t er = experts * r;
    Tensor hs = Tensor::Empty({n, r}, dt, be);
    Tensor dhs = Tensor::Empty({n, r}, dt, be);
    Tensor dh = Tensor::Empty({n, r}, dt, be);
    Tensor dgates_t = Tensor::Empty({experts, n}, dt, be);
    for (int64_t e = 0; e < experts; ++e) {
      const Tensor& h = c.h[e];
      const void* g_e = At(c.gates_t, e * n);
      be->ScaleColumnBlocks(dt, h.data(), g_e, n, 1, r, s.scaling, hs.data());
      // dB_e += dy^T hs_e
      be->Gemm(dt, true, false, s.d_out, r, n, 1.0, dy.data(), s.d_out, hs.data(), r, 1.0,
               At(g.lora_B, e * r), er);
      // dhs_e = dy B_e
      be->Gemm(dt, false, false, n, r, s.d_out, 1.0, dy.data(), s.d_out,
               At(am.params.lora_B, e * r), er, 0.0, dhs.data(), r);
      // dg[:, e] = alpha/r <dhs_e, h_e>;  dh_e = dhs_e * g[:, e] * alpha/r
      be->ColumnBlockDots(dt, dhs.data(), h.data(), n, 1, r, s.scaling, At(dgates_t, e * n));
      be->ScaleColumnBlocks(dt, dhs.data(), g_e, n, 1, r, s.scaling, dh.data());
      // dA_e += dh_e^T x;  dx += dh_e A_e
      be->Gemm(dt, true, false, r, s.d_in, n, 1.0, dh.data(), r, x.data(), s.d_in, 1.0,
               At(g.lora_A, e * r * s.d_in), s.d_in);
      be->Gemm(dt, false, false, n, s.d_in, r, 1.0, dh.data(), r,
               At(am.params.lora_A, e * r * s.d_in), s.d_in, 1.0, dx.data(), s.d_in);
    }
    // Router backward: identical code to pmol_stacked's.
    const std::vector<double> dgt = dgates_t.ToDoubles();
    std::vector<double> dgates(n * experts);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t e = 0; e < experts; ++e) dgates[t * experts + e] = dgt[e * n + t];
    std::vector<double> dprobs;
    if (am.aux_grad.defined()) dprobs = am.aux_grad.ToDoubles();
    const std::vector<double> dz_host =
        RouterBackward(s.layout, s.temperature, c.router, dgates, dprobs);
    const int64_t slots = s.layout.num_slots();
    const Tensor dz = Tensor::FromHost(dz_host.data(), {n, slots}, DType::kF64, be).ConvertTo(dt);
    be->Gemm(dt, true, false, slots, s.d_in, n, 1.0, dz.data(), slots, x.data(), s.d_in, 1.0,
             g.router.data(), s.d_in);
    be->Gemm(dt, false, false, n, s.d_in, slots, 1.0, dz.data(), slots,
             am.params.router.data(), s.d_in, 1.0, dx.data(), s.d_in);
    c = Cache();  // free as the backward goes, like PmolAdapters
  }

 private:
  struct Cache {
    RouterState router;
    Tensor gates_t;          // [E, N]
    std::vector<Tensor> h;   // per expert [N, r]
  };

  int Index(int64_t layer, LinearModule m) const {
    const int64_t key = layer * kNumLinearModules + static_cast<int>(m);
    PMOL_CHECK(key >= 0 && key < static_cast<int64_t>(index_.size()) && index_[key] >= 0);
    return index_[key];
  }

  PmolAdapters* params_;
  std::vector<PmolLinearParams> grads_;
  std::vector<Cache> caches_;
  std::vector<int> index_;  // [layer * 7 + module] -> module index, or -1
};

// ---------------------------------------------------------------------------------------
// Wraps a hook and accumulates the seconds spent inside its Forward and Backward.
class TimedAdapters final : public LinearAdapters {
 public:
  TimedAdapters(LinearAdapters* inner, Backend* be) : inner_(inner), be_(be) {}
  double forward_s = 0, backward_s = 0;
  void Reset() { forward_s = backward_s = 0; }

  bool Adapts(int64_t layer, LinearModule m) const override { return inner_->Adapts(layer, m); }
  void Forward(int64_t layer, LinearModule m, const Tensor& x, Tensor& y) override {
    const auto t0 = Now();
    inner_->Forward(layer, m, x, y);
    forward_s += Since(t0);
  }
  void Backward(int64_t layer, LinearModule m, const Tensor& x, const Tensor& dy,
                Tensor& dx) override {
    const auto t0 = Now();
    inner_->Backward(layer, m, x, dy, dx);
    backward_s += Since(t0);
  }

 private:
  std::chrono::steady_clock::time_point Now() {
    if (be_->device() != DeviceType::kCpu) be_->Synchronize();
    return std::chrono::steady_clock::now();
  }
  double Since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(Now() - t0).count();
  }
  LinearAdapters* inner_;
  Backend* be_;
};

// ---------------------------------------------------------------------------------------

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t k = v.size() / 2;
  return v.size() % 2 ? v[k] : 0.5 * (v[k - 1] + v[k]);
}


void FillRandom(Tensor& t, Rng& rng, double stddev) {
  std::vector<double> v(t.numel());
  for (double& x : v) x = stddev * rng.Normal();
  t.CopyFrom(Tensor::FromHost(v.data(), t.shape(), DType::kF64, t.backend()).ConvertTo(t.dtype()));
}

// max |a - b| / max |b| (b the reference).
double RelDiff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.ToDoubles(), y = b.ToDoubles();
  PMOL_CHECK(x.size() == y.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

double ParamMb(PmolAdapters& a) {
  double bytes = 0;
  for (auto& [name, t] : a.Params()) bytes += 2.0 * t.nbytes();  // + gradient
  return bytes / (1024.0 * 1024.0);
}

struct Variant {
  std::string name;
  PmolAdapters* pmol = nullptr;            // lora / pmol_stacked
  PerExpertLoopAdapters* loop = nullptr;   // pmol_loop
  std::unique_ptr<TimedAdapters> timed;    // null: frozen
  std::vector<double> step_s, adapter_s, adapter_fwd_s, adapter_bwd_s;
  double peak_extra_mb = -1, param_mb = 0;
};

int Main() {
  absl::StatusOr<LlamaConfig> parsed = ReadHfConfig(FLAGS_hf_config);
  if (!parsed.ok()) {
    std::fprintf(stderr, "adapter_benchmark: %s\n", std::string(parsed.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<DeviceType> device = ParseDevice(FLAGS_device);
  if (!device.ok()) {
    std::fprintf(stderr, "adapter_benchmark: --device: %s\n", std::string(device.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<Backend*> backend = GetBackend(*device, FLAGS_threads);
  if (!backend.ok()) {
    std::fprintf(stderr, "adapter_benchmark: %s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  Backend* be = *backend;
  ExpertLayout layout;
  {
    std::stringstream ss(FLAGS_groups);
    std::string item;
    while (std::getline(ss, item, ',')) {
      const int v = std::atoi(item.c_str());
      if (v <= 0) {
        std::fprintf(stderr, "adapter_benchmark: --groups '%s': each entry must be a positive "
                     "expert count\n", FLAGS_groups.c_str());
        return 1;
      }
      layout.experts_per_group.push_back(v);
    }
  }
  if (layout.experts_per_group.empty() || FLAGS_rank <= 0 || FLAGS_empty < 0 || FLAGS_batch <= 0 ||
      FLAGS_seq <= 0 || FLAGS_steps <= 0 || FLAGS_warmup < 0) {
    std::fprintf(stderr, "adapter_benchmark: need --groups non-empty, --rank > 0, --empty >= 0, "
                 "--batch/--seq/--steps > 0, --warmup >= 0\n");
    return 1;
  }
  layout.num_empty = FLAGS_empty;
  layout.rank = FLAGS_rank;

  const LlamaConfig& config = *parsed;
  if (FLAGS_seq > config.max_position_embeddings) {
    std::fprintf(stderr, "adapter_benchmark: --seq %d exceeds max_position_embeddings %lld of %s\n",
                 FLAGS_seq, (long long)config.max_position_embeddings, FLAGS_hf_config.c_str());
    return 1;
  }
  const DType dt = DType::kF32;
  LlamaModel model(config, InitLlamaWeights(config, 7, 0.02, be, dt), be, dt);

  AdapterOptions pmol_opts;
  pmol_opts.kind = AdapterKind::kPmol;
  pmol_opts.layout = layout;
  pmol_opts.alpha = 2.0 * FLAGS_rank;
  pmol_opts.targets.fill(true);
  AdapterOptions lora_opts = pmol_opts;
  lora_opts.kind = AdapterKind::kLora;
  lora_opts.layout.experts_per_group = {1};
  lora_opts.layout.num_empty = 0;

  PmolAdapters pmol(pmol_opts, config, be, dt), lora(lora_opts, config, be, dt);
  pmol.Initialize(11);
  lora.Initialize(12);
  {
    Rng rng(13);
    for (AdaptedModule& am : pmol.modules()) {
      FillRandom(am.params.lora_B, rng, 0.02);
      FillRandom(am.params.router, rng, 0.1);  // gates far from uniform for the check
    }
    for (AdaptedModule& am : lora.modules()) FillRandom(am.params.lora_B, rng, 0.02);
  }
  PerExpertLoopAdapters loop(&pmol);

  const int64_t n_tok = static_cast<int64_t>(FLAGS_batch) * FLAGS_seq;
  Rng rng(1);
  std::vector<int32_t> ids(n_tok);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.NextU64() % config.vocab_size);
  Tensor cot;
  {
    std::vector<float> ct(ids.size() * config.vocab_size);
    for (float& v : ct) v = static_cast<float>(rng.Normal());
    cot = Tensor::FromHost(ct.data(), {FLAGS_batch, FLAGS_seq, config.vocab_size}, dt, be);
  }

  int64_t params = 0;
  {
    LlamaWeights shapes;
    ForEachWeight(config, shapes, [&](const WeightSlot& s) { params += NumElements(s.shape); });
  }
  std::printf("model: %.1fM parameters (hidden %lld, %lld layers, heads %lld/%lld, vocab %lld); "
              "batch %d x %d tokens; %d threads; %s\n",
              params / 1e6, (long long)config.hidden_size, (long long)config.num_hidden_layers,
              (long long)config.num_attention_heads, (long long)config.num_key_value_heads,
              (long long)config.vocab_size, FLAGS_batch, FLAGS_seq, FLAGS_threads, be->Name().c_str());
  std::printf("adapters: %zu modules (q,k,v,o,gate,up,down x %lld layers); PMoL groups {%s} + %d "
              "empty = %d experts, %d router slots, r = %d, alpha = %.0f; LoRA r = %d\n",
              pmol.modules().size(), (long long)config.num_hidden_layers, FLAGS_groups.c_str(),
              FLAGS_empty, layout.num_experts(), layout.num_slots(), FLAGS_rank, pmol_opts.alpha,
              FLAGS_rank);
  std::printf("GEMMs per module: pmol_stacked fwd 3, bwd 6; pmol_loop fwd %d, bwd %d\n",
              2 * layout.num_experts() + 1, 4 * layout.num_experts() + 2);

  // ---- Correctness of the peer: pmol_loop == pmol_stacked on the same parameters.
  {
    ForwardState s1, s2;
    pmol.ZeroGrads();
    loop.ZeroGrads();
    Tensor logits1 = model.Forward(ids, FLAGS_batch, FLAGS_seq, &s1, &pmol).value();
    Tensor dx1 = model.Backward(s1, cot, nullptr);
    Tensor logits2 = model.Forward(ids, FLAGS_batch, FLAGS_seq, &s2, &loop).value();
    Tensor dx2 = model.Backward(s2, cot, nullptr);
    double worst = 0;
    const double d_logits = RelDiff(logits2, logits1), d_dx = RelDiff(dx2, dx1);
    double d_a = 0, d_b = 0, d_r = 0;
    for (size_t i = 0; i < pmol.modules().size(); ++i) {
      d_a = std::max(d_a, RelDiff(loop.grads()[i].lora_A, pmol.modules()[i].grads.lora_A));
      d_b = std::max(d_b, RelDiff(loop.grads()[i].lora_B, pmol.modules()[i].grads.lora_B));
      d_r = std::max(d_r, RelDiff(loop.grads()[i].router, pmol.modules()[i].grads.router));
    }
    worst = std::max({d_logits, d_dx, d_a, d_b, d_r});
    std::printf("check pmol_loop vs pmol_stacked (max|a-b|/max|b| per tensor, worst over modules): "
                "logits %.2e, dx0 %.2e, dA %.2e, dB %.2e, dW_router %.2e\n",
                d_logits, d_dx, d_a, d_b, d_r);
    if (!(worst <= 1e-4)) {
      std::fprintf(stderr, "adapter_benchmark: pmol_loop does not compute what pmol_stacked does "
                   "(worst relative difference %.3e > 1e-4); not timing a wrong peer\n", worst);
      return 2;
    }
    std::printf("check passed (<= 1e-4)\n");
  }

  std::vector<Variant> variants;
  for (const std::string name : {"frozen", "lora", "pmol_stacked", "pmol_loop"}) {
    if (("," + FLAGS_variants + ",").find("," + name + ",") == std::string::npos) continue;
    Variant v;
    v.name = name;
    LinearAdapters* hook = nullptr;
    if (name == "lora") v.pmol = &lora, hook = &lora;
    if (name == "pmol_stacked") v.pmol = &pmol, hook = &pmol;
    if (name == "pmol_loop") v.loop = &loop, hook = &loop;
    if (hook != nullptr) v.timed = std::make_unique<TimedAdapters>(hook, be);
    if (v.pmol != nullptr || v.loop != nullptr) v.param_mb = ParamMb(v.pmol ? *v.pmol : pmol);
    variants.push_back(std::move(v));
  }
  if (variants.empty()) {
    std::fprintf(stderr, "adapter_benchmark: --variants '%s' names none of frozen, lora, "
                 "pmol_stacked, pmol_loop\n", FLAGS_variants.c_str());
    return 1;
  }

  // One training step without optimizer: zero adapter grads, forward, backward.
  auto step = [&](Variant& v) {
    if (v.pmol) v.pmol->ZeroGrads();
    if (v.loop) v.loop->ZeroGrads();
    if (v.timed) v.timed->Reset();
    be->Synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    {
      ForwardState state;
      model.Forward(ids, FLAGS_batch, FLAGS_seq, &state, v.timed.get()).value();
      model.Backward(state, cot, nullptr);
    }
    be->Synchronize();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };

  for (int w = 0; w < FLAGS_warmup; ++w)
    for (Variant& v : variants) step(v);
  // Interleaved: round i runs every variant once, starting at a rotating position.
  const size_t nv = variants.size();
  for (int i = 0; i < FLAGS_steps; ++i) {
    for (size_t j = 0; j < nv; ++j) {
      Variant& v = variants[(i + j) % nv];
      v.step_s.push_back(step(v));
      if (v.timed) {
        v.adapter_fwd_s.push_back(v.timed->forward_s);
        v.adapter_bwd_s.push_back(v.timed->backward_s);
        v.adapter_s.push_back(v.timed->forward_s + v.timed->backward_s);
      }
    }
    std::fprintf(stderr, "round %d/%d done\n", i + 1, FLAGS_steps);
  }
  // Peak memory: one extra step per variant, after timing.
  bool rss_ok = true;
  for (Variant& v : variants) {
    malloc_trim(0);
    const double before = ProcStatusKb("VmRSS");
    if (before < 0 || !ResetPeakRss()) {
      rss_ok = false;
      break;
    }
    step(v);
    const double peak = ProcStatusKb("VmHWM");
    v.peak_extra_mb = peak < 0 ? -1 : (peak - before) / 1024.0;
  }

  const Variant* frozen = nullptr;
  for (const Variant& v : variants)
    if (v.name == "frozen") frozen = &v;
  const double frozen_s = frozen ? Median(frozen->step_s) : 0;
  std::printf("\nmedian of %d interleaved steps after %d warm-up steps per variant\n", FLAGS_steps,
              FLAGS_warmup);
  std::printf("%-13s %9s %9s %10s %10s %10s %10s %8s %11s %11s %9s\n", "variant", "s/step",
              "min s", "tokens/s", "adapter s", "fwd s", "bwd s", "share", "step-frozen",
              "step+RSS MB", "params MB");
  for (const Variant& v : variants) {
    const double s = Median(v.step_s), a = Median(v.adapter_s);
    char diff[32] = "-", rss[32] = "n/a", pm[32] = "-";
    if (frozen && &v != frozen) std::snprintf(diff, sizeof(diff), "%.4f", s - frozen_s);
    if (v.peak_extra_mb >= 0) std::snprintf(rss, sizeof(rss), "%.0f", v.peak_extra_mb);
    if (v.param_mb > 0) std::snprintf(pm, sizeof(pm), "%.2f", v.param_mb);
    std::printf("%-13s %9.4f %9.4f %10.0f %10.4f %10.4f %10.4f %7.1f%% %11s %11s %9s\n",
                v.name.c_str(), s, *std::min_element(v.step_s.begin(), v.step_s.end()),
                n_tok / s, a, Median(v.adapter_fwd_s), Median(v.adapter_bwd_s), 100.0 * a / s,
                diff, rss, pm);
  }
  if (!rss_ok) std::printf("(peak RSS: /proc/self/clear_refs not writable here)\n");
  std::printf("adapter s = time inside the adapter hook's Forward+Backward calls (the adapter-only "
              "view); share = adapter s / s/step;\nstep+RSS = peak RSS of one step over the RSS "
              "before it; params MB = adapter parameters + gradients\n\n");

  auto find = [&](const std::string& name) -> const Variant* {
    for (const Variant& v : variants)
      if (v.name == name) return &v;
    return nullptr;
  };
  auto ratio = [&](const char* label, const char* a, const char* b) {
    const Variant *va = find(a), *vb = find(b);
    if (!va || !vb) return;
    std::printf("%-44s step %.3fx", label, Median(va->step_s) / Median(vb->step_s));
    if (va->timed && vb->timed)
      std::printf("   adapter-only %.3fx", Median(va->adapter_s) / Median(vb->adapter_s));
    std::printf("\n");
  };
  ratio("pmol_stacked / frozen (PMoL overhead)", "pmol_stacked", "frozen");
  ratio("lora / frozen (LoRA overhead)", "lora", "frozen");
  ratio("pmol_stacked / lora", "pmol_stacked", "lora");
  ratio("pmol_loop / pmol_stacked (stacking speedup)", "pmol_loop", "pmol_stacked");
  ratio("pmol_loop / frozen", "pmol_loop", "frozen");
  return 0;
}

}  // namespace
}  // namespace pmol

int main(int argc, char** argv) {
  gflags::SetUsageMessage(
      "PMoL adapter overhead and stacked vs per-expert-loop expert computation, forward+backward");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  return pmol::Main();
}
