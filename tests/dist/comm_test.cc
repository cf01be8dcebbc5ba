// The MPI backend of Comm under mpirun (4 ranks, and sub-groups of 1-3 from Split):
// every collective against values computed independently on each rank, uneven and
// empty blocks, collectives in flight together, the traffic accounting of comm.h, the process groups of
// `parallel { dp: ep: }`, and the single-process LocalComm.
#include <cstdint>
#include <numeric>
#include <vector>

#include "dist/local_comm.h"
#include "dist/process_groups.h"
#include "gtest/gtest.h"
#include "tests/dist/mpi_test_main.h"

namespace pmol::dist {
namespace {

// Rank r's contribution to element i.
double Value(int r, int64_t i) { return 1.0 + r * 1000.0 + static_cast<double>(i) * 0.5; }

// Groups of the first k ranks (the others get a group of their own and skip the checks).
std::unique_ptr<Comm> FirstRanks(int k) {
  Comm& world = TestWorld();
  return world.Split(world.rank() < k ? 0 : 1, world.rank(), "first");
}

TEST(MpiCommTest, WorldShape) {
  EXPECT_EQ(TestWorld().size(), 4);
  EXPECT_GE(TestWorld().rank(), 0);
  EXPECT_LT(TestWorld().rank(), 4);
}

TEST(MpiCommTest, AllReduceSumMaxMinEveryDtype) {
  for (int k = 1; k <= 4; ++k) {
    std::unique_ptr<Comm> c = FirstRanks(k);
    if (TestWorld().rank() >= k) continue;
    const int n = c->size(), r = c->rank();
    std::vector<double> d(37);
    std::vector<float> f(37);
    std::vector<int32_t> i32(37);
    for (int64_t i = 0; i < 37; ++i) d[i] = f[i] = Value(r, i), i32[i] = static_cast<int32_t>(r * 10 + i);
    c->AllReduce(d.data(), 37, DType::kF64, ReduceOp::kSum);
    c->AllReduce(f.data(), 37, DType::kF32, ReduceOp::kMax);
    c->AllReduce(i32.data(), 37, DType::kI32, ReduceOp::kMin);
    for (int64_t i = 0; i < 37; ++i) {
      double sum = 0;
      for (int q = 0; q < n; ++q) sum += Value(q, i);
      EXPECT_DOUBLE_EQ(d[i], sum) << "k=" << k << " i=" << i;
      EXPECT_FLOAT_EQ(f[i], static_cast<float>(Value(n - 1, i)));
      EXPECT_EQ(i32[i], static_cast<int32_t>(i));
    }
  }
}

TEST(MpiCommTest, CollectivesInFlightTogetherCompleteInAnyOrder) {
  // Two all-reduces and a reduce-scatter started before any completes, on two
  // communicators; waited for in reverse order, the first only tested until done; a
  // PendingCollective dropped while in flight waits for itself.
  std::unique_ptr<Comm> other = TestWorld().Split(0, TestWorld().rank(), "other");
  Comm& c = TestWorld();
  const int n = c.size(), r = c.rank();
  std::vector<double> a(1000), b(7), send(4 * 5), recv(5, -1), dropped(3, 1.0);
  for (size_t i = 0; i < a.size(); ++i) a[i] = Value(r, i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = -Value(r, i);
  for (size_t i = 0; i < send.size(); ++i) send[i] = Value(r, i);
  std::unique_ptr<PendingCollective> pa = c.StartAllReduce(a.data(), 1000, DType::kF64, ReduceOp::kSum);
  std::unique_ptr<PendingCollective> pb = other->StartAllReduce(b.data(), 7, DType::kF64, ReduceOp::kSum);
  std::unique_ptr<PendingCollective> ps =
      c.StartReduceScatter(send.data(), recv.data(), {5, 5, 5, 5}, DType::kF64, ReduceOp::kSum);
  other->StartAllReduce(dropped.data(), 3, DType::kF64, ReduceOp::kSum);  // destroyed at once: waits
  EXPECT_EQ(dropped, std::vector<double>(3, n));
  ps->Wait();
  pb->Wait();
  while (!pa->Test()) {
  }
  EXPECT_TRUE(pa->Test());
  for (int64_t i = 0; i < 1000; ++i) {
    double sum = 0;
    for (int q = 0; q < n; ++q) sum += Value(q, i);
    ASSERT_DOUBLE_EQ(a[i], sum) << "i=" << i;
    if (i < 7) EXPECT_DOUBLE_EQ(b[i], -sum);
    if (i < 5) {
      double block = 0;
      for (int q = 0; q < n; ++q) block += Value(q, r * 5 + i);
      EXPECT_DOUBLE_EQ(recv[i], block);
    }
  }
  LocalComm local;
  std::vector<double> x = {1, 2}, y(2);
  EXPECT_TRUE(local.StartAllReduce(x.data(), 2, DType::kF64, ReduceOp::kSum)->Test());
  EXPECT_TRUE(local.StartReduceScatter(x.data(), y.data(), {2}, DType::kF64, ReduceOp::kSum)->Test());
  EXPECT_EQ(y, x);
}

TEST(MpiCommTest, ReduceScatterAndAllGatherWithUnevenAndEmptyBlocks) {
  for (int k = 1; k <= 4; ++k) {
    std::unique_ptr<Comm> c = FirstRanks(k);
    if (TestWorld().rank() >= k) continue;
    const int n = c->size(), r = c->rank();
    // Blocks 3, 0, 5, 1 (truncated to n ranks): uneven, one empty.
    const std::vector<int64_t> all = {3, 0, 5, 1};
    std::vector<int64_t> counts(all.begin(), all.begin() + n);
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    int64_t begin = 0;
    for (int q = 0; q < r; ++q) begin += counts[q];
    std::vector<double> send(total), recv(counts[r] + 1, -7);
    for (int64_t i = 0; i < total; ++i) send[i] = Value(r, i);
    c->ReduceScatter(send.data(), recv.data(), counts, DType::kF64, ReduceOp::kSum);
    for (int64_t i = 0; i < counts[r]; ++i) {
      double sum = 0;
      for (int q = 0; q < n; ++q) sum += Value(q, begin + i);
      EXPECT_DOUBLE_EQ(recv[i], sum) << "k=" << k << " rank " << r << " i=" << i;
    }
    EXPECT_EQ(recv[counts[r]], -7) << "wrote past its block";

    std::vector<float> mine(counts[r]), gathered(total, -1);
    for (int64_t i = 0; i < counts[r]; ++i) mine[i] = static_cast<float>(Value(r, i));
    c->AllGather(mine.data(), gathered.data(), counts, DType::kF32);
    int64_t at = 0;
    for (int q = 0; q < n; ++q) {
      for (int64_t i = 0; i < counts[q]; ++i) EXPECT_EQ(gathered[at++], static_cast<float>(Value(q, i)));
    }
  }
}

TEST(MpiCommTest, AllToAllBroadcastBarrierAndStrings) {
  Comm& c = TestWorld();
  const int n = c.size(), r = c.rank();
  // Rank r sends (r + q) % 3 elements to rank q, valued 100 r + q.
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<double> send;
  for (int q = 0; q < n; ++q) {
    send_counts[q] = (r + q) % 3;
    recv_counts[q] = (q + r) % 3;
    for (int64_t i = 0; i < send_counts[q]; ++i) send.push_back(100.0 * r + q + 0.25 * i);
  }
  std::vector<double> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
  c.AllToAll(send.data(), send_counts, recv.data(), recv_counts, DType::kF64);
  int64_t at = 0;
  for (int q = 0; q < n; ++q) {
    for (int64_t i = 0; i < recv_counts[q]; ++i) EXPECT_EQ(recv[at++], 100.0 * q + r + 0.25 * i);
  }
  std::vector<double> b(5, r);
  c.Broadcast(b.data(), 5, DType::kF64, 2);
  for (double x : b) EXPECT_EQ(x, 2.0);
  c.Barrier();
  EXPECT_EQ(c.BroadcastString(r == 1 ? "checkpoint dir/step-00000007" : "", 1), "checkpoint dir/step-00000007");
  EXPECT_EQ(c.BroadcastString(r == 3 ? "" : "x", 3), "");
}

TEST(MpiCommTest, TrafficFollowsTheRingModel) {
  std::unique_ptr<Comm> c = TestWorld().Split(0, TestWorld().rank(), "all");
  const int n = c->size(), r = c->rank();
  std::vector<float> x(1000, 1.0f);
  c->AllReduce(x.data(), 1000, DType::kF32, ReduceOp::kSum);
  EXPECT_EQ(c->stats().all_reduce_bytes, 2 * (n - 1) * 4000 / n);  // 6000 for 4 ranks
  const std::vector<int64_t> counts = {10, 20, 30, 40};
  std::vector<float> send(100, 1.0f), recv(40);
  c->ReduceScatter(send.data(), recv.data(), counts, DType::kF32, ReduceOp::kSum);
  EXPECT_EQ(c->stats().reduce_scatter_bytes, (100 - counts[r]) * 4);
  std::vector<float> gathered(100);
  c->AllGather(recv.data(), gathered.data(), counts, DType::kF32);
  EXPECT_EQ(c->stats().all_gather_bytes, (100 - counts[r]) * 4);
  EXPECT_EQ(c->stats().calls, 3);
  c->ResetStats();
  EXPECT_EQ(c->stats().total_bytes(), 0);
}

TEST(ProcessGroupsTest, DpTimesEpLayout) {
  Comm& world = TestWorld();
  config::ParallelConfig p;
  p.set_ep(2);
  absl::StatusOr<ProcessGroups> g = MakeProcessGroups(&world, p);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->dp, 2);
  EXPECT_EQ(g->ep, 2);
  EXPECT_EQ(g->dp_index, world.rank() / 2);
  EXPECT_EQ(g->ep_index, world.rank() % 2);
  EXPECT_EQ(g->expert_parallel->size(), 2);
  EXPECT_EQ(g->expert_parallel->rank(), world.rank() % 2);
  EXPECT_EQ(g->expert_data_parallel->size(), 2);
  EXPECT_EQ(g->expert_data_parallel->rank(), world.rank() / 2);
  // The expert-parallel group holds consecutive ranks: summing world ranks over it.
  const double ep_sum = g->expert_parallel->AllReduceSum(world.rank());
  EXPECT_EQ(ep_sum, 2 * (world.rank() / 2) * 2 + 1);
  const double edp_sum = g->expert_data_parallel->AllReduceSum(world.rank());
  EXPECT_EQ(edp_sum, 2 * (world.rank() % 2) + 2);
}

TEST(ProcessGroupsTest, ShapesThatDoNotFitTheWorldAreNamed) {
  Comm& world = TestWorld();
  config::ParallelConfig p;
  p.set_ep(3);
  absl::StatusOr<ProcessGroups> g = MakeProcessGroups(&world, p);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("parallel.ep = 3 must divide the world size 4"), std::string::npos)
      << g.status();
  p.set_ep(2);
  p.set_dp(3);
  g = MakeProcessGroups(&world, p);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("parallel.dp x parallel.ep = 3 x 2 = 6, but the launcher started 4"),
            std::string::npos)
      << g.status();
  p.set_dp(4);
  p.set_ep(1);
  EXPECT_TRUE(MakeProcessGroups(&world, p).ok());
}

TEST(LocalCommTest, IdentityCollectivesMoveNothing) {
  LocalComm c;
  EXPECT_EQ(c.size(), 1);
  std::vector<double> x = {1, 2, 3}, y(3);
  c.AllReduce(x.data(), 3, DType::kF64, ReduceOp::kSum);
  EXPECT_EQ(x, (std::vector<double>{1, 2, 3}));
  c.ReduceScatter(x.data(), y.data(), {3}, DType::kF64, ReduceOp::kSum);
  EXPECT_EQ(y, x);
  std::vector<double> z(3);
  c.AllGather(y.data(), z.data(), {3}, DType::kF64);
  EXPECT_EQ(z, x);
  EXPECT_EQ(c.stats().total_bytes(), 0);
  EXPECT_EQ(c.BroadcastString("abc", 0), "abc");
  config::ParallelConfig p;
  absl::StatusOr<ProcessGroups> g = MakeProcessGroups(&c, p);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dp, 1);
  EXPECT_EQ(g->expert_parallel->size(), 1);
}

}  // namespace
}  // namespace pmol::dist
