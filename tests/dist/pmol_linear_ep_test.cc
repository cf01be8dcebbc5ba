// The expert-parallel PMoL linear (pmol/adapters/pmol_linear_ep.h) on 4 ranks under
// mpirun, against the one-process layer (pmol_linear.h) holding every expert, in f64:
//   * each rank's output y and input gradient dx equal the one-process layer's on the
//     same rows, and its router gradient too (the router is replicated);
//   * each rank's expert gradients equal the one-process gradients of those experts
//     summed over the rows of every rank of its expert-parallel group;
// for dense routing, top-k, top-k with a capacity factor that drops rows, dropout and an
// auxiliary gradient on the router probabilities, with uneven, non-contiguous placements
// (groups of 2 and of 4 ranks) and a rank with no rows. Tolerance 1e-12 relative to the
// largest element: only the order of floating-point sums differs (the expert outputs
// are added rank by rank instead of in one GEMM); a lost or misrouted row changes
// values at 1e-2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pmol/adapters/expert_slices.h"
#include "pmol/adapters/pmol_linear.h"
#include "pmol/adapters/pmol_linear_ep.h"
#include "tests/dist/mpi_test_main.h"

namespace pmol {
namespace {

constexpr double kTol = 1e-12;

Backend* Cpu() { return GetBackend(DeviceType::kCpu).value(); }

Tensor Random(const Shape& shape, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::vector<double> v(NumElements(shape));
  for (double& x : v) x = normal(gen);
  return Tensor::FromHost(v.data(), shape, DType::kF64, Cpu());
}

void ExpectClose(const Tensor& got, const Tensor& want, const std::string& what) {
  const std::vector<double> g = got.ToDoubles(), w = want.ToDoubles();
  ASSERT_EQ(g.size(), w.size()) << what;
  double scale = 0, diff = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    scale = std::max(scale, std::abs(w[i]));
    diff = std::max(diff, std::abs(g[i] - w[i]));
  }
  EXPECT_LE(diff, kTol * std::max(scale, 1e-300)) << what << " on rank " << dist::TestWorld().rank();
}

struct Case {
  std::string name;
  int32_t top_k = 0;
  double capacity_factor = 0;
  bool dropout = false;
  bool aux = false;
};

// Runs one case over expert-parallel groups of `group_size` ranks with `placement`.
void CheckAgainstOneProcess(const Case& c, int group_size, const std::vector<std::vector<int32_t>>& placement) {
  SCOPED_TRACE(c.name + ", groups of " + std::to_string(group_size));
  dist::Comm& world = dist::TestWorld();
  std::unique_ptr<dist::Comm> comm = world.Split(world.rank() / group_size, world.rank(), "expert-parallel");
  PmolLinearSpec spec;
  spec.d_in = 6;
  spec.d_out = 5;
  spec.layout.experts_per_group = {1, 2, 1};
  spec.layout.num_empty = 1;
  spec.layout.rank = 2;
  spec.scaling = 1.5;
  spec.temperature = 0.7;
  spec.top_k = c.top_k;
  spec.capacity_factor = c.capacity_factor;
  const int64_t experts = spec.layout.num_experts(), slots = spec.layout.num_slots(), r = spec.layout.rank;
  // The same parameters on every rank; B not zero so that every path carries signal.
  PmolLinearParams full;
  full.lora_A = Random({experts * r, spec.d_in}, 11);
  full.lora_B = Random({spec.d_out, experts * r}, 12);
  full.router = Random({slots, spec.d_in}, 13);
  // This rank's rows: 7, 5, 9, and none on rank 3.
  const int64_t rows = world.rank() == 3 ? 0 : std::vector<int64_t>{7, 5, 9}[world.rank()];
  const Tensor x = Random({rows, spec.d_in}, 100 + world.rank());
  const Tensor y0 = Random({rows, spec.d_out}, 200 + world.rank());
  const Tensor dy = Random({rows, spec.d_out}, 300 + world.rank());
  Tensor keep;
  if (c.dropout) {
    std::vector<double> k(rows * spec.d_in);
    std::mt19937_64 gen(400 + world.rank());
    for (double& v : k) v = gen() % 4 == 0 ? 0.0 : 1.0;
    spec.dropout_scale = 1.0 / 0.75;
    keep = Tensor::FromHost(k.data(), {rows, spec.d_in}, DType::kF64, Cpu());
  }
  const Tensor aux = c.aux ? Random({rows, slots}, 500 + world.rank()) : Tensor();

  // One process, every expert.
  auto zero_grads = [&](const PmolLinearParams& like) {
    PmolLinearParams g;
    g.lora_A = Tensor::Zeros(like.lora_A.shape(), DType::kF64, Cpu());
    g.lora_B = Tensor::Zeros(like.lora_B.shape(), DType::kF64, Cpu());
    g.router = Tensor::Zeros(like.router.shape(), DType::kF64, Cpu());
    return g;
  };
  Tensor y_ref = y0.Clone(), dx_ref = Tensor::Zeros(x.shape(), DType::kF64, Cpu());
  PmolLinearCache cache_ref;
  PmolLinearForward(spec, full, x, keep, y_ref, &cache_ref);
  PmolLinearParams g_ref = zero_grads(full);
  PmolLinearBackward(spec, full, x, cache_ref, dy, aux, dx_ref, &g_ref);
  if (c.capacity_factor > 0 && world.rank() == 0) {
    EXPECT_GT(PmolDroppedCount(cache_ref), 0) << "the case must drop rows to test capacity";
  }

  // Expert parallel.
  ExpertParallelGroup group;
  group.comm = comm.get();
  group.experts_of_rank = placement;
  const std::vector<int32_t>& local = group.local_experts();
  PmolLinearParams mine;
  mine.lora_A = SliceExpertRows(full.lora_A, local, r);
  mine.lora_B = SliceExpertColumns(full.lora_B, local, r);
  mine.router = full.router;
  Tensor y = y0.Clone(), dx = Tensor::Zeros(x.shape(), DType::kF64, Cpu());
  PmolLinearCache cache;
  PmolLinearForwardEP(spec, group, mine, x, keep, y, &cache);
  PmolLinearParams g = zero_grads(mine);
  PmolLinearBackwardEP(spec, group, mine, x, cache, dy, aux, dx, &g);

  ExpectClose(y, y_ref, "y");
  ExpectClose(dx, dx_ref, "dx");
  ExpectClose(g.router, g_ref.router, "router gradient");
  // The group's rows' expert gradients, summed over its ranks, cut to this rank's experts.
  comm->AllReduce(g_ref.lora_A.data(), g_ref.lora_A.numel(), DType::kF64, dist::ReduceOp::kSum);
  comm->AllReduce(g_ref.lora_B.data(), g_ref.lora_B.numel(), DType::kF64, dist::ReduceOp::kSum);
  ExpectClose(g.lora_A, SliceExpertRows(g_ref.lora_A, local, r), "lora_A gradient");
  ExpectClose(g.lora_B, SliceExpertColumns(g_ref.lora_B, local, r), "lora_B gradient");
}

const Case kCases[] = {
    {"dense"},
    {"dense, dropout and aux", 0, 0, true, true},
    {"top-2", 2},
    {"top-2, capacity 0.6, dropout and aux", 2, 0.6, true, true},
};

TEST(PmolLinearEpTest, GroupsOfFourRanksMatchOneProcess) {
  for (const Case& c : kCases) CheckAgainstOneProcess(c, 4, {{3}, {0}, {1, 2}, {}});
}

TEST(PmolLinearEpTest, GroupsOfTwoRanksMatchOneProcess) {
  for (const Case& c : kCases) CheckAgainstOneProcess(c, 2, {{1, 2}, {0, 3}});
}

}  // namespace
}  // namespace pmol
