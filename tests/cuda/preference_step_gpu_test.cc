// A whole PMoL-DPO step on the GPU against the CPU path: the tiny PMoL run of the training
// tests (2 layers, 2 groups x 2 experts + routers, rank 3, DPO + group + balance loss,
// 4 pairs of two preferences, lora_B set nonzero so that the policy differs from the
// reference) is built once on the CPU in f64 (the oracle) and once on CUDA, in f64 and in
// f32, with and without activation recompute; the losses, the reward figures and every
// trainable gradient (lora_A, lora_B, routers) are compared. bf16 mixed precision has its
// own test and tolerances (Bf16StepIsAsAccurateAsTheCpuBf16Step).
//
// Tolerances, per tensor relative to its largest entry (max |gpu - cpu| <= tol * max|cpu|),
// and for the loss parts relative to max(|cpu|, 1e-2) (reward sums can be near 0, where
// only an absolute bound makes sense):
//   CUDA f64 vs CPU f64: 1e-10. Both compute in double; only the summation orders of
//     GEMMs and reductions differ (~sqrt(n) ulp of 1.1e-16 over sums of <= 64 terms here),
//     chained through two layers' forward and backward.
//   CUDA f32 vs CPU f64: 2e-4. f32 rounding (6e-8) amplified by the depth of the chain
//     (about 40 dependent GEMM/softmax/norm stages forward and backward) and by the DPO
//     loss's difference of log-prob sums, ~1e-5 expected; 2e-4 leaves margin while still
//     catching a wrong kernel (an error in any op moves gradients by O(1) relative).
// Without a GPU (the build machines), every test is skipped.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "pmol/model/head_logprobs.h"
#include "pmol/train/run_components.h"
#include "tests/train/train_test_util.h"

namespace pmol {
namespace {

bool HaveGpu() { return GetBackend(DeviceType::kCuda).ok(); }

// lora_B = 0.05 sin(1 + i) on any device (train_test_util's PerturbB writes host memory).
void SetLoraB(RunComponents& run) {
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  for (AdaptedModule& am : run.adapters->modules()) {
    Tensor& b = am.params.lora_B;
    std::vector<double> values(b.numel());
    for (size_t i = 0; i < values.size(); ++i) values[i] = 0.05 * std::sin(1.0 + static_cast<double>(i));
    b.CopyFrom(Tensor::FromHost(values.data(), b.shape(), DType::kF64, cpu).ConvertTo(b.dtype()));
  }
}

struct StepResult {
  std::vector<double> parts;  // loss, main, group, balance, reward sums
  std::vector<std::pair<std::string, std::vector<double>>> grads;
};

StepResult RunStep(const std::string& device, const std::string& dtype, bool recompute,
                   int rank = 3) {
  config::RunConfig c = TinyConfig();
  c.mutable_adapter()->set_rank(rank);
  c.mutable_model()->set_device(device);
  c.mutable_model()->set_dtype(dtype);
  c.mutable_model()->set_recompute_activations(recompute);
  absl::StatusOr<std::unique_ptr<RunComponents>> run = BuildRunComponents(c, "");
  EXPECT_TRUE(run.ok()) << run.status();
  if (!run.ok()) return {};
  SetLoraB(**run);
  absl::StatusOr<StepMetrics> m = (*run)->step->Run(TinyBatch(0, 4), 1.0);
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return {};
  StepResult out;
  out.parts = {m->loss, m->main, m->group, m->balance};
  for (double x : m->reward_chosen_sum) out.parts.push_back(x);
  for (double x : m->reward_rejected_sum) out.parts.push_back(x);
  for (auto& [name, g] : (*run)->TrainableGrads()) out.grads.push_back({name, g.ToDoubles()});
  return out;
}

void ExpectMatches(const StepResult& gpu, const StepResult& cpu, double tol) {
  ASSERT_EQ(gpu.parts.size(), cpu.parts.size());
  for (size_t i = 0; i < cpu.parts.size(); ++i) {
    EXPECT_LE(std::fabs(gpu.parts[i] - cpu.parts[i]), tol * std::max(1e-2, std::fabs(cpu.parts[i])))
        << "loss part " << i << ": gpu " << gpu.parts[i] << " cpu " << cpu.parts[i];
  }
  ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
  for (size_t t = 0; t < cpu.grads.size(); ++t) {
    const auto& [name, want] = cpu.grads[t];
    const std::vector<double>& got = gpu.grads[t].second;
    ASSERT_EQ(gpu.grads[t].first, name);
    ASSERT_EQ(got.size(), want.size()) << name;
    double scale = 0, worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, std::fabs(want[i]));
      worst = std::max(worst, std::fabs(got[i] - want[i]));
    }
    ASSERT_GT(scale, 0) << name << ": a zero gradient would make this comparison empty";
    EXPECT_LE(worst, tol * scale) << name << ": max |gpu - cpu| " << worst << " vs max |cpu| " << scale;
  }
}

TEST(PreferenceStepGpuTest, LossesAndGradientsMatchTheCpuPath) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable GPU: " << GetBackend(DeviceType::kCuda).status();
  const StepResult cpu = RunStep("cpu", "f64", false);
  ASSERT_FALSE(cpu.grads.empty());
  for (bool recompute : {false, true}) {
    SCOPED_TRACE(recompute ? "with activation recompute" : "stored activations");
    ExpectMatches(RunStep("cuda", "f64", recompute), cpu, 1e-10);
    ExpectMatches(RunStep("cuda", "f32", recompute), cpu, 2e-4);
  }
}

// The largest error of `got` against `want` over the loss parts (relative to
// max(|want|, 1e-2)) and the gradient tensors (relative to the tensor's largest entry).
double WorstError(const StepResult& got, const StepResult& want) {
  double worst = 0;
  EXPECT_EQ(got.parts.size(), want.parts.size());
  EXPECT_EQ(got.grads.size(), want.grads.size());
  if (got.parts.size() != want.parts.size() || got.grads.size() != want.grads.size()) return 1e300;
  for (size_t i = 0; i < want.parts.size(); ++i)
    worst = std::max(worst, std::fabs(got.parts[i] - want.parts[i]) / std::max(1e-2, std::fabs(want.parts[i])));
  for (size_t t = 0; t < want.grads.size(); ++t) {
    const std::vector<double>& a = got.grads[t].second;
    const std::vector<double>& b = want.grads[t].second;
    double scale = 0, err = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      scale = std::max(scale, std::fabs(b[i]));
      err = std::max(err, std::fabs(a[i] - b[i]));
    }
    worst = std::max(worst, err / std::max(scale, 1e-300));
  }
  return worst;
}

// bf16 mixed precision: the GPU step against the CPU's bf16 step, both judged by the f64
// oracle. The two round to bf16 in different places (GEMM and reduction orders), so they
// differ from each other about as much as each differs from f64 (on the CPU, bf16 against
// f32: 1-4% per gradient tensor, tests/train/preference_step_test). Checks: the GPU's
// worst error against f64 is at most twice the CPU bf16 step's plus 1e-3 (the GPU is no
// less accurate than the CPU path), and the GPU matches the CPU bf16 step within 0.1 of
// each tensor's largest entry (a wrong kernel moves a gradient by O(1)).
// Rank 3 (2 x 2 experts: 12 expert columns) runs the experts' projections through cuBLASLt
// and the epilogue kernel, rank 8 (32 columns, widths 16 and 24) on the tensor-core
// kernels of kernels/cuda/experts.cu.
TEST(PreferenceStepGpuTest, Bf16StepIsAsAccurateAsTheCpuBf16Step) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable GPU: " << GetBackend(DeviceType::kCuda).status();
  for (int rank : {3, 8}) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    const StepResult f64 = RunStep("cpu", "f64", false, rank);
    const StepResult cpu_bf16 = RunStep("cpu", "bf16", false, rank);
    ASSERT_FALSE(cpu_bf16.grads.empty());
    const double cpu_error = WorstError(cpu_bf16, f64);
    for (bool recompute : {false, true}) {
      SCOPED_TRACE(recompute ? "with activation recompute" : "stored activations");
      const StepResult gpu_bf16 = RunStep("cuda", "bf16", recompute, rank);
      const double gpu_error = WorstError(gpu_bf16, f64);
      std::printf("rank %d: bf16 worst error against f64: gpu %.3e, cpu %.3e\n", rank,
                  gpu_error, cpu_error);
      EXPECT_LE(gpu_error, 2 * cpu_error + 1e-3);
      ExpectMatches(gpu_bf16, cpu_bf16, 0.1);
    }
  }
}

TEST(PreferenceStepGpuTest, RepeatsBitForBit) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable GPU: " << GetBackend(DeviceType::kCuda).status();
  const StepResult a = RunStep("cuda", "f32", false), b = RunStep("cuda", "f32", false);
  EXPECT_EQ(a.parts, b.parts);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t t = 0; t < a.grads.size(); ++t) EXPECT_EQ(a.grads[t].second, b.grads[t].second) << a.grads[t].first;
}

// The frozen head's chunked log-probs (pmol/model/head_logprobs.h) on a large vocabulary,
// which the tiny step above does not reach: 50000 words, 96 selected positions (rows
// repeated, some targets -1) in chunks of 40 rows, so three chunks, the last partial.
// logp, the gradient basis and the backward's dhidden on CUDA against the CPU in f64,
// with the step's tolerances (1e-10 in f64; 2e-4 in f32, where the logsumexp over 50000
// words adds ~sqrt(50000) u = 1.4e-5 relative).
TEST(PreferenceStepGpuTest, ChunkedHeadLogProbsMatchTheCpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable GPU: " << GetBackend(DeviceType::kCuda).status();
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  Backend* gpu = GetBackend(DeviceType::kCuda).value();
  constexpr int64_t kN = 64, kH = 48, kV = 50000, kM = 96;
  std::vector<double> hidden(kN * kH), head(kV * kH), dlogp(kM);
  std::vector<int32_t> positions(kM), targets(kM);
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = std::sin(0.7 * static_cast<double>(i));
  for (size_t i = 0; i < head.size(); ++i) head[i] = 0.3 * std::cos(1.3 * static_cast<double>(i));
  for (int64_t i = 0; i < kM; ++i) {
    positions[i] = static_cast<int32_t>((i * 7) % kN);
    targets[i] = i % 11 == 5 ? -1 : static_cast<int32_t>((i * 7919) % kV);
    dlogp[i] = std::cos(0.37 * static_cast<double>(i));
  }
  auto run = [&](Backend* be, DType dt) {
    auto on = [&](const std::vector<double>& v, const Shape& shape) {
      return Tensor::FromHost(v.data(), shape, DType::kF64, cpu).ConvertTo(dt).CopyTo(be);
    };
    const Tensor h = on(hidden, {kN, kH}), w = on(head, {kV, kH});
    const Tensor pos = Tensor::FromHost(positions.data(), {kM}, DType::kI32, be);
    const Tensor tgt = Tensor::FromHost(targets.data(), {kM}, DType::kI32, be);
    const int64_t chunk = 40 * kV * static_cast<int64_t>(DTypeSize(dt));
    const HeadLogProbs f = HeadLogProbsAt(w, h, pos, tgt, true, chunk);
    const Tensor dh = HeadLogProbsBackward(f, h, pos, on(dlogp, {kM}));
    StepResult r;
    r.grads = {{"logp", f.logp.ToDoubles()}, {"basis", f.basis.ToDoubles()}, {"dhidden", dh.ToDoubles()}};
    return r;
  };
  const StepResult want = run(cpu, DType::kF64);
  ExpectMatches(run(gpu, DType::kF64), want, 1e-10);
  ExpectMatches(run(gpu, DType::kF32), want, 2e-4);
}

}  // namespace
}  // namespace pmol
