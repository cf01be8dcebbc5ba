// ZeRO stages 0, 1 and 2 on 1-4 ranks (sub-groups of the 4-rank test world) against one
// process running pmol::AdamW on the summed gradient: parameters after every step, with
// clipping active, uneven shards (Ψ not divisible by the ranks, an empty tensor, a
// bucket size that splits tensors), bytes moved per step against the analytic volume of
// each stage, checkpoint pieces written on one rank count resumed on another, and the
// reduction overlapped with a simulated backward (buckets start in a fixed order as
// their tensors are reported final, whatever each rank reports).
//
// Tolerance: f64 throughout; the runs differ from the reference only in the order the
// ranks' gradients are added, so parameters agree to 1e-12 relative to their scale.
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "dist/local_comm.h"
#include "dist/zero_optimizer.h"
#include "gtest/gtest.h"
#include "pmol/optim/adamw.h"
#include "pmol/optim/grad_clip.h"
#include "tests/dist/mpi_test_main.h"

namespace pmol::dist {
namespace {

const std::vector<Shape> kShapes = {{3, 5}, {0}, {7}, {2, 2, 3}, {1}};
constexpr int kMicroPerStep = 4;  // micro-batches per step over all ranks
constexpr double kMaxNorm = 0.9;  // active: the summed gradients have norms of several units

Backend* Cpu() { return GetBackend(DeviceType::kCpu).value(); }

// The gradient of micro-batch m (global index) of `step` for element j of tensor i.
double MicroGrad(int step, int m, size_t i, int64_t j) {
  return std::sin(0.37 * (j + 1) * (i + 1) + 0.7 * m + 1.3 * step) * (1.0 + 0.1 * i);
}

struct Model {
  NamedTensors params, grads;
  std::vector<bool> decay;
};

Model MakeModel() {
  Model m;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Tensor p = Tensor::Empty(kShapes[i], DType::kF64, Cpu());
    double* d = p.data_as<double>();
    for (int64_t j = 0; j < p.numel(); ++j) d[j] = std::cos(0.11 * j + i);
    m.params.emplace_back("t" + std::to_string(i), p);
    m.grads.emplace_back("t" + std::to_string(i), Tensor::Zeros(kShapes[i], DType::kF64, Cpu()));
    m.decay.push_back(i % 2 == 0);
  }
  return m;
}

// Adds micro-batch m's gradient (scaled by 1 / kMicroPerStep) to the buffers.
void AddMicroGrad(Model& model, int step, int m) {
  for (size_t i = 0; i < model.grads.size(); ++i) {
    double* g = model.grads[i].second.data_as<double>();
    for (int64_t j = 0; j < model.grads[i].second.numel(); ++j) g[j] += MicroGrad(step, m, i, j) / kMicroPerStep;
  }
}

AdamWOptions Adam() {
  AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  return o;
}

// The reference: one process, pmol::AdamW, every micro-batch's gradient summed in order.
std::vector<std::vector<double>> Reference(int steps) {
  Model model = MakeModel();
  AdamW adam(Adam());
  for (size_t i = 0; i < model.params.size(); ++i) {
    EXPECT_TRUE(adam.AddParam(model.params[i].first, model.params[i].second, model.grads[i].second,
                              model.decay[i]).ok());
  }
  for (int s = 0; s < steps; ++s) {
    for (auto& [n, g] : model.grads) g.SetZero();
    for (int m = 0; m < kMicroPerStep; ++m) AddMicroGrad(model, s, m);
    std::vector<Tensor> g;
    for (auto& [n, t] : model.grads) g.push_back(t);
    ClipGradNorm(g, kMaxNorm);
    adam.Step(0.05);
  }
  std::vector<std::vector<double>> out;
  for (auto& [n, p] : model.params) out.push_back(p.ToDoubles());
  return out;
}

// Runs `steps` steps (from `first_step`) of the ZeRO optimizer; rank r of k takes the
// micro-batches m = a * k + r.
void Train(ZeroOptimizer& zero, Model& model, Comm& comm, int first_step, int steps) {
  const int k = comm.size(), r = comm.rank();
  for (int s = first_step; s < first_step + steps; ++s) {
    for (auto& [n, g] : model.grads) g.SetZero();
    zero.BeginStep();
    for (int a = 0; a < kMicroPerStep / k; ++a) {
      AddMicroGrad(model, s, a * k + r);
      zero.AfterMicroBatch();
    }
    const double norm = zero.ReduceAndClip(kMaxNorm);
    EXPECT_GT(norm, kMaxNorm) << "clipping should be active";
    zero.Step(0.05);
  }
}

void ExpectParamsNear(const Model& model, const std::vector<std::vector<double>>& want, const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i) {
    const std::vector<double> got = model.params[i].second.ToDoubles();
    for (size_t j = 0; j < got.size(); ++j) {
      EXPECT_NEAR(got[j], want[i][j], 1e-12 * (1 + std::abs(want[i][j]))) << what << " tensor " << i << " [" << j << "]";
    }
  }
}

std::unique_ptr<Comm> FirstRanks(int k) {
  Comm& world = TestWorld();
  return world.Split(world.rank() < k ? 0 : 1, world.rank(), "data-parallel");
}

TEST(ZeroOptimizerTest, EveryStageOnOneToFourRanksMatchesOneProcess) {
  const std::vector<std::vector<double>> want = Reference(3);
  for (int k : {1, 2, 4}) {  // kMicroPerStep / k micro-batches per rank
    std::unique_ptr<Comm> comm = FirstRanks(k);
    for (int stage = 0; stage <= 2; ++stage) {
      if (TestWorld().rank() >= k) continue;
      Model model = MakeModel();
      ZeroOptions options;
      options.stage = stage;
      options.bucket_bytes = 7 * 8;  // 7 elements: buckets split tensors and shards
      absl::StatusOr<std::unique_ptr<ZeroOptimizer>> zero =
          ZeroOptimizer::Create(comm.get(), model.params, model.grads, model.decay, Adam(), options);
      ASSERT_TRUE(zero.ok()) << zero.status();
      Train(**zero, model, *comm, 0, 3);
      ExpectParamsNear(model, want, "k=" + std::to_string(k) + " stage " + std::to_string(stage));
    }
  }
}

// Adds micro-batch m's gradient tensor by tensor in `order`, reporting each as final
// after it is added (when `report`), as a backward does. Returns how many collectives
// the optimizer had started before the last tensor of `order` was added.
int64_t AddMicroGradReporting(ZeroOptimizer& zero, Model& model, Comm& comm, int step, int m,
                              const std::vector<size_t>& order, bool report) {
  const int64_t calls_before = comm.stats().calls;
  int64_t started_before_last = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const size_t i = order[k];
    double* g = model.grads[i].second.data_as<double>();
    for (int64_t j = 0; j < model.grads[i].second.numel(); ++j) g[j] += MicroGrad(step, m, i, j) / kMicroPerStep;
    if (k + 1 == order.size()) started_before_last = comm.stats().calls - calls_before;
    if (report) zero.GradientReady(i);
  }
  return started_before_last;
}

TEST(ZeroOptimizerTest, ReductionOverlappedWithTheBackwardGivesTheSameSteps) {
  // Ψ = 35 in buckets of 7: b0 [0,7) and b1 [7,14) hold only t0, b2 [14,21) t0 and t2,
  // b3 [21,28) t2 and t3, b4 [28,35) t3 and t4 (t1 is empty). Reported as a backward
  // does (t4 first), b4 and b3 start before t0 is final; reported in registration order
  // (t0 first) nothing can start early, since buckets start from the last one. The last
  // rank reports nothing (as if its backward had failed): its AfterMicroBatch starts
  // every bucket and the ranks' collectives still match.
  const std::vector<std::vector<double>> want = Reference(3);
  const std::vector<size_t> backward = {4, 3, 2, 1, 0}, forward = {0, 1, 2, 3, 4};
  for (int k : {2, 4}) {
    std::unique_ptr<Comm> comm = FirstRanks(k);
    for (int stage = 0; stage <= 2; ++stage) {
      if (TestWorld().rank() >= k) continue;
      const std::string what = "k=" + std::to_string(k) + " stage " + std::to_string(stage);
      const int r = comm->rank();
      // The same run reducing after the backward (the path proven above), for equality.
      Model plain = MakeModel(), model = MakeModel();
      ZeroOptions options;
      options.stage = stage;
      options.bucket_bytes = 7 * 8;
      auto reference = ZeroOptimizer::Create(comm.get(), plain.params, plain.grads, plain.decay, Adam(), options);
      auto zero = ZeroOptimizer::Create(comm.get(), model.params, model.grads, model.decay, Adam(), options);
      ASSERT_TRUE(zero.ok() && reference.ok());
      Train(**reference, plain, *comm, 0, 3);
      for (int s = 0; s < 3; ++s) {
        for (auto& [n, g] : model.grads) g.SetZero();
        (*zero)->BeginStep();
        const int micro = kMicroPerStep / k;
        for (int a = 0; a < micro; ++a) {
          const bool last = a + 1 == micro, reduced = stage == 2 || last;
          (*zero)->BeginMicroBatch(last);
          const std::vector<size_t>& order = r % 2 == 0 ? backward : forward;
          const int64_t early = AddMicroGradReporting(**zero, model, *comm, s, a * k + r, order, r != k - 1);
          // Rank 0 reports in backward order: b4 and b3 are in flight before t0 is final.
          if (r == 0) EXPECT_EQ(early, reduced ? 2 : 0) << what << " step " << s << " micro-batch " << a;
          if (r % 2 == 1) EXPECT_EQ(early, 0) << what;
          (*zero)->AfterMicroBatch();
        }
        EXPECT_GT((*zero)->ReduceAndClip(kMaxNorm), kMaxNorm);
        (*zero)->Step(0.05);
      }
      ExpectParamsNear(model, want, what);
      for (size_t i = 0; i < model.params.size(); ++i) {
        EXPECT_EQ(model.params[i].second.ToDoubles(), plain.params[i].second.ToDoubles())
            << what << ": overlapping the reduction changed tensor " << i;
      }
    }
  }
}

TEST(ZeroOptimizerTest, UnevenShardsOnThreeRanks) {
  // 4 micro-batches over 3 ranks do not divide: use 3 ranks with one micro-batch each
  // plus the fourth on rank 0, summed the same way as the reference.
  const std::vector<std::vector<double>> want = Reference(2);
  std::unique_ptr<Comm> comm = FirstRanks(3);
  for (int stage = 0; stage <= 2; ++stage) {
    if (TestWorld().rank() >= 3) continue;
    Model model = MakeModel();
    ZeroOptions options;
    options.stage = stage;
    options.bucket_bytes = 5 * 8;
    auto zero = ZeroOptimizer::Create(comm.get(), model.params, model.grads, model.decay, Adam(), options);
    ASSERT_TRUE(zero.ok()) << zero.status();
    const int64_t psi = (*zero)->flat_size();
    EXPECT_EQ(psi, 15 + 0 + 7 + 12 + 1);
    const int64_t shard = (*zero)->shard_end() - (*zero)->shard_begin();
    if (stage > 0) EXPECT_EQ(shard, comm->rank() < psi % 3 ? psi / 3 + 1 : psi / 3);
    for (int s = 0; s < 2; ++s) {
      for (auto& [n, g] : model.grads) g.SetZero();
      (*zero)->BeginStep();
      AddMicroGrad(model, s, comm->rank());
      if (comm->rank() == 0) AddMicroGrad(model, s, 3);
      (*zero)->AfterMicroBatch();
      (*zero)->ReduceAndClip(kMaxNorm);
      (*zero)->Step(0.05);
    }
    ExpectParamsNear(model, want, "3 ranks, stage " + std::to_string(stage));
  }
}

TEST(ZeroOptimizerTest, BytesPerStepEqualTheAnalyticVolume) {
  std::unique_ptr<Comm> comm = FirstRanks(4);
  const int n = 4;
  for (int stage = 0; stage <= 2; ++stage) {
    Model model = MakeModel();
    ZeroOptions options;
    options.stage = stage;
    options.bucket_bytes = 1 << 20;  // one bucket
    auto zero = ZeroOptimizer::Create(comm.get(), model.params, model.grads, model.decay, Adam(), options);
    ASSERT_TRUE(zero.ok()) << zero.status();
    const int64_t psi = (*zero)->flat_size(), b = 8;
    const std::vector<int64_t> shards = EvenBlocks(psi, n);
    const int64_t own = shards[comm->rank()];
    comm->ResetStats();
    Train(**zero, model, *comm, 0, 1);
    const CommStats& st = comm->stats();
    const int64_t norm_all_reduce = 2 * (n - 1) * 8 / n;  // the clipping norm (one f64), stages 1, 2
    const int micro_per_rank = kMicroPerStep / n;
    if (stage == 0) {
      EXPECT_EQ(st.all_reduce_bytes, 2 * (n - 1) * psi * b / n);
      EXPECT_EQ(st.reduce_scatter_bytes + st.all_gather_bytes, 0);
    } else {
      EXPECT_EQ(st.all_reduce_bytes, norm_all_reduce);
      const int reductions = stage == 1 ? 1 : micro_per_rank;
      EXPECT_EQ(st.reduce_scatter_bytes, reductions * (psi - own) * b);
      EXPECT_EQ(st.all_gather_bytes, (psi - own) * b);
    }
  }
}

TEST(ZeroOptimizerTest, CheckpointPiecesReshardOntoAnotherRankCount) {
  // Two steps on 4 ranks with stage 2, the state pieces of every rank gathered, then the
  // third step on 2 ranks (stage 1) and on one process (stage 0) from those pieces.
  const std::vector<std::vector<double>> want = Reference(3);
  std::unique_ptr<Comm> four = FirstRanks(4);
  Model model = MakeModel();
  ZeroOptions options;
  options.stage = 2;
  auto zero = ZeroOptimizer::Create(four.get(), model.params, model.grads, model.decay, Adam(), options);
  ASSERT_TRUE(zero.ok()) << zero.status();
  Train(**zero, model, *four, 0, 2);
  // Every rank's piece, on every rank (as a checkpoint on a shared file system would).
  const StatePiece mine = (*zero)->ShardState();
  const int64_t psi = (*zero)->flat_size();
  std::vector<int64_t> counts = EvenBlocks(psi, 4);
  std::vector<double> m(psi), v(psi);
  four->AllGather(mine.exp_avg.data(), m.data(), counts, DType::kF64);
  four->AllGather(mine.exp_avg_sq.data(), v.data(), counts, DType::kF64);
  std::vector<StatePiece> pieces;
  int64_t at = 0;
  for (int q = 0; q < 4; ++q) {
    StatePiece p;
    p.begin = at;
    p.end = at + counts[q];
    p.exp_avg = Tensor::FromHost(m.data() + at, {counts[q]}, DType::kF64, Cpu());
    p.exp_avg_sq = Tensor::FromHost(v.data() + at, {counts[q]}, DType::kF64, Cpu());
    pieces.push_back(p);
    at += counts[q];
  }
  std::vector<std::vector<double>> params_after_two;
  for (auto& [n, p] : model.params) params_after_two.push_back(p.ToDoubles());

  for (int k : {2, 1}) {
    std::unique_ptr<Comm> comm = k == 1 ? std::unique_ptr<Comm>(new LocalComm()) : FirstRanks(k);
    if (TestWorld().rank() >= k) continue;
    Model resumed = MakeModel();
    for (size_t i = 0; i < resumed.params.size(); ++i) {
      resumed.params[i].second.CopyFrom(
          Tensor::FromHost(params_after_two[i].data(), kShapes[i], DType::kF64, Cpu()));
    }
    ZeroOptions o;
    o.stage = k == 1 ? 0 : 1;
    auto z = ZeroOptimizer::Create(comm.get(), resumed.params, resumed.grads, resumed.decay, Adam(), o);
    ASSERT_TRUE(z.ok()) << z.status();
    ASSERT_TRUE((*z)->LoadState(pieces, 2).ok());
    EXPECT_EQ((*z)->step(), 2);
    Train(**z, resumed, *comm, 2, 1);
    ExpectParamsNear(resumed, want, "resumed on " + std::to_string(k));
  }
  // A gap in the pieces is named.
  if (TestWorld().rank() == 0) {
    LocalComm local;
    Model other = MakeModel();
    auto z = ZeroOptimizer::Create(&local, other.params, other.grads, other.decay, Adam(), ZeroOptions());
    ASSERT_TRUE(z.ok());
    std::vector<StatePiece> gap = {pieces[0], pieces[2], pieces[3]};
    absl::Status s = (*z)->LoadState(gap, 2);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("no piece covers elements [" + std::to_string(counts[0])), std::string::npos) << s;
  }
}

TEST(ZeroOptimizerTest, MixedDtypesAreRefused) {
  LocalComm local;
  Model model = MakeModel();
  model.params[2].second = Tensor::Zeros(kShapes[2], DType::kF32, Cpu());
  auto z = ZeroOptimizer::Create(&local, model.params, model.grads, model.decay, Adam(), ZeroOptions());
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.status().message().find("'t2'"), std::string::npos) << z.status();
}

}  // namespace
}  // namespace pmol::dist
