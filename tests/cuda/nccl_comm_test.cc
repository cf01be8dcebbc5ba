// The NCCL backend of Comm (dist/nccl_comm.h) on one GPU, and LocalComm on GPU buffers.
// One GPU holds one NCCL rank (NCCL refuses two ranks on one device), so every collective
// here is over a world of one: the values are the identity, and what is tested is the
// plumbing that multi-rank runs rely on as well: which transport a call takes (GPU
// buffers to NCCL, host buffers to the host Comm), the offsets of the uneven-block forms
// (ncclReduce / ncclBroadcast per root, send/recv per peer), ordering after the compute
// stream (buffers written by kernels just before the call), Start/Test/Wait, Split, the
// traffic counts, a mixed host/GPU call refused, and the watchdog ending a collective that
// does not finish within the timeout. The multi-rank logic itself is the same Comm code
// that tests/dist runs under mpirun on CPU.
//
// Every comparison is exact: collectives over one rank move bytes, they compute nothing.
// Without a GPU (the build machines), every test is skipped.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <numeric>
#include <thread>
#include <vector>

#include "dist/comm.h"
#include "dist/local_comm.h"
#include "dist/nccl_comm.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/dtype.h"

namespace pmol::dist {
namespace {

Backend* Gpu() {
  absl::StatusOr<Backend*> gpu = GetBackend(DeviceType::kCuda);
  return gpu.ok() ? *gpu : nullptr;
}

#define SKIP_WITHOUT_GPU()                                        \
  if (Gpu() == nullptr) GTEST_SKIP() << "no usable GPU: " << GetBackend(DeviceType::kCuda).status()

// A device buffer of `host`'s values, and back.
template <typename T>
void* ToGpu(const std::vector<T>& host) {
  void* p = Gpu()->Allocate(host.size() * sizeof(T));
  Gpu()->CopyFromHost(p, host.data(), host.size() * sizeof(T));
  return p;
}
template <typename T>
std::vector<T> FromGpu(const void* p, size_t n) {
  std::vector<T> out(n);
  Gpu()->CopyToHost(out.data(), p, n * sizeof(T));
  return out;
}

std::unique_ptr<Comm> OneRankNccl(bool even_fast_path = true, double timeout_seconds = 60) {
  NcclOptions options;
  options.even_blocks_fast_path = even_fast_path;
  options.timeout_seconds = timeout_seconds;
  absl::StatusOr<std::unique_ptr<Comm>> comm = CreateNcclComm(std::make_unique<LocalComm>(), Gpu(), options);
  EXPECT_TRUE(comm.ok()) << comm.status();
  return comm.ok() ? std::move(*comm) : nullptr;
}

std::vector<float> Iota(size_t n, float start) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(NcclCommTest, RefusesAHostBackend) {
  absl::StatusOr<Backend*> cpu = GetBackend(DeviceType::kCpu);
  ASSERT_TRUE(cpu.ok());
  absl::StatusOr<std::unique_ptr<Comm>> comm = CreateNcclComm(std::make_unique<LocalComm>(), *cpu, NcclOptions{});
  ASSERT_FALSE(comm.ok());
  EXPECT_NE(std::string(comm.status().message()).find("CUDA backend"), std::string::npos) << comm.status();
}

TEST(NcclCommTest, GpuCollectivesOfOneRankMoveTheBytes) {
  SKIP_WITHOUT_GPU();
  for (bool fast : {true, false}) {
    SCOPED_TRACE(fast ? "even-block fast path" : "per-root grouped form");
    std::unique_ptr<Comm> comm = OneRankNccl(fast);
    ASSERT_NE(comm, nullptr);
    EXPECT_EQ(comm->size(), 1);
    EXPECT_EQ(comm->rank(), 0);
    const size_t n = 1003;
    const std::vector<float> values = Iota(n, -500.5f);

    // In place: unchanged, for every reducible type.
    void* f = ToGpu(values);
    comm->AllReduce(f, n, DType::kF32, ReduceOp::kSum);
    EXPECT_EQ(FromGpu<float>(f, n), values);
    std::vector<uint16_t> bf16(n);
    for (size_t i = 0; i < n; ++i) bf16[i] = F32ToBf16(values[i]);
    void* b = ToGpu(bf16);
    comm->AllReduce(b, n, DType::kBF16, ReduceOp::kMax);
    EXPECT_EQ(FromGpu<uint16_t>(b, n), bf16);
    std::vector<int32_t> ints(n);
    std::iota(ints.begin(), ints.end(), -7);
    void* i32 = ToGpu(ints);
    comm->Broadcast(i32, n, DType::kI32, 0);
    EXPECT_EQ(FromGpu<int32_t>(i32, n), ints);

    // Separate output buffers: the block lands at offset 0 of recv.
    void* recv = Gpu()->Allocate(n * sizeof(float));
    Gpu()->Fill(DType::kF32, recv, -1.0, n);
    comm->ReduceScatter(f, recv, {static_cast<int64_t>(n)}, DType::kF32, ReduceOp::kSum);
    EXPECT_EQ(FromGpu<float>(recv, n), values);
    Gpu()->Fill(DType::kF32, recv, -1.0, n);
    comm->AllGather(f, recv, {static_cast<int64_t>(n)}, DType::kF32);
    EXPECT_EQ(FromGpu<float>(recv, n), values);
    Gpu()->Fill(DType::kF32, recv, -1.0, n);
    comm->AllToAll(f, {static_cast<int64_t>(n)}, recv, {static_cast<int64_t>(n)}, DType::kF32);
    EXPECT_EQ(FromGpu<float>(recv, n), values);

    // Traffic of one rank is zero bytes under the ring model; every call is counted.
    EXPECT_EQ(comm->stats().total_bytes(), 0);
    EXPECT_EQ(comm->stats().calls, 6);
    for (void* p : {f, b, i32, recv}) Gpu()->Free(p);
  }
}

TEST(NcclCommTest, CollectiveSeesWhatTheComputeStreamWroteJustBefore) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Comm> comm = OneRankNccl();
  ASSERT_NE(comm, nullptr);
  const int64_t n = int64_t{1} << 24;  // 64 MB: the fill is still running when the call is made
  void* send = Gpu()->Allocate(n * sizeof(float));
  void* recv = Gpu()->Allocate(n * sizeof(float));
  for (int round = 0; round < 3; ++round) {
    Gpu()->Fill(DType::kF32, send, 1.0 + round, n);
    Gpu()->Fill(DType::kF32, recv, 0.0, n);
    std::unique_ptr<PendingCollective> pending =
        comm->StartReduceScatter(send, recv, {n}, DType::kF32, ReduceOp::kSum);
    pending->Wait();
    Gpu()->Scale(DType::kF32, 2.0, recv, n);  // after Wait: ordered after the collective
    const std::vector<float> out = FromGpu<float>(recv, n);
    for (int64_t i : {int64_t{0}, n / 2, n - 1}) EXPECT_EQ(out[i], 2.0f * (1 + round)) << "round " << round;
  }
  Gpu()->Free(send);
  Gpu()->Free(recv);
}

TEST(NcclCommTest, TestReportsCompletionWithoutWaiting) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Comm> comm = OneRankNccl();
  ASSERT_NE(comm, nullptr);
  const int64_t n = 1 << 20;
  void* data = Gpu()->Allocate(n * sizeof(float));
  Gpu()->Fill(DType::kF32, data, 3.0, n);
  std::unique_ptr<PendingCollective> pending = comm->StartAllReduce(data, n, DType::kF32, ReduceOp::kSum);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!pending->Test()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "Test() never became true";
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  pending->Wait();
  pending.reset();
  // Dropped while in flight: the drop orders the compute stream after it.
  std::unique_ptr<PendingCollective> dropped = comm->StartAllReduce(data, n, DType::kF32, ReduceOp::kSum);
  dropped.reset();
  EXPECT_EQ(FromGpu<float>(data, n)[n - 1], 3.0f);
  Gpu()->Free(data);
}

TEST(NcclCommTest, HostBuffersGoToTheHostComm) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Comm> comm = OneRankNccl();
  ASSERT_NE(comm, nullptr);
  std::vector<double> v = {1.5, -2.0, 7.25};
  comm->AllReduceSum(v);
  EXPECT_EQ(v, (std::vector<double>{1.5, -2.0, 7.25}));
  EXPECT_EQ(comm->BroadcastString("a string", 0), "a string");
  std::vector<int32_t> counts = {4}, received = {-1};
  comm->AllToAll(counts.data(), {1}, received.data(), {1}, DType::kI32);  // a host copy
  EXPECT_EQ(received[0], 4);
  const absl::Status agreed = AgreeOnStatus(*comm, absl::InternalError("only here"));
  EXPECT_EQ(agreed.message(), "only here");
  comm->Barrier();
  EXPECT_GE(comm->stats().calls, 4);
}

TEST(NcclCommTest, SplitGivesAWorkingCommunicator) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Comm> comm = OneRankNccl();
  ASSERT_NE(comm, nullptr);
  std::unique_ptr<Comm> part = comm->Split(0, 0, "data-parallel");
  ASSERT_NE(part, nullptr);
  EXPECT_EQ(part->name(), "data-parallel");
  EXPECT_EQ(part->size(), 1);
  const std::vector<float> values = Iota(77, 1);
  void* data = ToGpu(values);
  part->AllReduce(data, 77, DType::kF32, ReduceOp::kSum);
  EXPECT_EQ(FromGpu<float>(data, 77), values);
  Gpu()->Free(data);
}

TEST(NcclCommDeathTest, HostAndGpuBuffersInOneCallAreRefused) {
  SKIP_WITHOUT_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::unique_ptr<Comm> comm = OneRankNccl();
        std::vector<float> host(8, 1.0f);
        void* gpu = Gpu()->Allocate(8 * sizeof(float));
        comm->AllGather(host.data(), gpu, {8}, DType::kF32);
      },
      testing::ExitedWithCode(1), "one GPU buffer and one host buffer");
}

void CUDART_CB SleepThreeSeconds(void*) { std::this_thread::sleep_for(std::chrono::seconds(3)); }

TEST(NcclCommDeathTest, WatchdogEndsACollectiveThatDoesNotFinish) {
  SKIP_WITHOUT_GPU();
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::unique_ptr<Comm> comm = OneRankNccl(true, /*timeout_seconds=*/0.5);
        void* data = Gpu()->Allocate(64 * sizeof(float));
        // The compute stream is stuck for 3 s, so the collective queued behind it is too.
        cudaLaunchHostFunc(static_cast<cudaStream_t>(CudaBackendStream(Gpu())), SleepThreeSeconds, nullptr);
        std::unique_ptr<PendingCollective> pending = comm->StartAllReduce(data, 64, DType::kF32, ReduceOp::kSum);
        std::this_thread::sleep_for(std::chrono::seconds(10));
        std::_Exit(0);  // not reached: the watchdog exits first
      },
      testing::ExitedWithCode(1), "all-reduce on the world group .* did not complete within 0.5 s");
}

void CUDART_CB SleepHalfASecond(void*) { std::this_thread::sleep_for(std::chrono::milliseconds(500)); }

// TakeDeviceWaitSeconds: with the NCCL stream held up for 0.5 s before an all-reduce, the
// compute stream's Wait() for it stands still about that long (>= 0.4 s: the host function
// sleeps at least 0.5 s after the compute stream reached its wait, and event times are
// exact to microseconds). A blocking all-gather held up the same way is not counted, and
// a count once taken restarts at 0.
TEST(NcclCommTest, TimesTheComputeStreamsWaitForAStartedCollective) {
  SKIP_WITHOUT_GPU();
  std::unique_ptr<Comm> comm = OneRankNccl();
  ASSERT_NE(comm, nullptr);
  const auto nccl_stream = static_cast<cudaStream_t>(NcclCommStream(comm.get()));
  ASSERT_NE(nccl_stream, nullptr);
  EXPECT_EQ(comm->TakeDeviceWaitSeconds(), 0.0);
  const std::vector<float> values = Iota(1024, 1);
  void* data = ToGpu(values);
  ASSERT_EQ(cudaLaunchHostFunc(nccl_stream, SleepHalfASecond, nullptr), cudaSuccess);
  comm->StartAllReduce(data, 1024, DType::kF32, ReduceOp::kSum)->Wait();
  const double stalled = comm->TakeDeviceWaitSeconds();
  EXPECT_GE(stalled, 0.4);
  EXPECT_LT(stalled, 10.0);
  EXPECT_EQ(FromGpu<float>(data, 1024), values);  // one rank: the sum is the input
  EXPECT_EQ(comm->TakeDeviceWaitSeconds(), 0.0);

  void* gathered = Gpu()->Allocate(1024 * sizeof(float));
  ASSERT_EQ(cudaLaunchHostFunc(nccl_stream, SleepHalfASecond, nullptr), cudaSuccess);
  comm->AllGather(data, gathered, {1024}, DType::kF32);
  EXPECT_EQ(FromGpu<float>(gathered, 1024), values);
  EXPECT_EQ(comm->TakeDeviceWaitSeconds(), 0.0);
  Gpu()->Free(gathered);
  Gpu()->Free(data);
}

TEST(LocalCommOnGpuTest, CopiesGoThroughTheBackend) {
  SKIP_WITHOUT_GPU();
  LocalComm comm("world", Gpu());
  const std::vector<float> values = Iota(501, 3);
  void* send = ToGpu(values);
  void* recv = Gpu()->Allocate(501 * sizeof(float));
  Gpu()->Fill(DType::kF32, recv, 0.0, 501);
  comm.ReduceScatter(send, recv, {501}, DType::kF32, ReduceOp::kSum);
  EXPECT_EQ(FromGpu<float>(recv, 501), values);
  Gpu()->Fill(DType::kF32, recv, 0.0, 501);
  std::unique_ptr<Comm> part = comm.Split(0, 0, "expert-parallel");
  part->AllGather(send, recv, {501}, DType::kF32);
  EXPECT_EQ(FromGpu<float>(recv, 501), values);
  Gpu()->Free(send);
  Gpu()->Free(recv);
}

}  // namespace
}  // namespace pmol::dist
