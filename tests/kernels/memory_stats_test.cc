// The CPU backend's memory accounting (Backend::GetMemoryStats, kernels/backend.h):
// in_use counts exactly the bytes requested from Allocate and not yet freed, directly or
// through Tensor (Empty, Zeros, Clone; views and Tensor::Wrap add nothing); peak is the
// maximum of in_use since ResetPeakMemory(), which sets it to in_use; reserved is in_use
// plus what the block cache holds (a large block's capacity slack while it is live, the
// whole block once freed, until ReleaseCachedMemory unmaps it); a freed large block is
// handed out again; and the counts stay exact when several threads allocate and free at
// once.
// The backend is the process-wide one, so every figure is checked relative to the
// counts at the start of the test, with no tolerance.
#include <barrier>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "pmol/core/tensor.h"
#include "tests/kernels/kernel_test_util.h"

namespace pmol::testing {
namespace {

// The backend with its peak reset, so that peak == in_use at the start.
Backend* FreshPeak() {
  Backend* be = Cpu(1);
  be->ResetPeakMemory();
  return be;
}

void ExpectStats(Backend* be, int64_t in_use, int64_t peak, const char* what) {
  const MemoryStats s = be->GetMemoryStats();
  EXPECT_EQ(s.in_use_bytes, in_use) << what;
  EXPECT_EQ(s.peak_in_use_bytes, peak) << what;
  EXPECT_GE(s.reserved_bytes, s.in_use_bytes) << what;
}

// reserved - in_use: the bytes the block cache holds beyond what callers asked for.
int64_t Slack(Backend* be) {
  const MemoryStats s = be->GetMemoryStats();
  return s.reserved_bytes - s.in_use_bytes;
}

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * kKiB;

TEST(MemoryStatsTest, AllocateAndFreeCountTheRequestedBytes) {
  Backend* be = FreshPeak();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  ExpectStats(be, base, base, "after ResetPeakMemory");
  const std::vector<size_t> sizes = {100, 0, 1, 64, 4099, size_t{3} << 20};
  std::vector<void*> blocks;
  int64_t total = 0;
  for (size_t bytes : sizes) {
    void* p = be->Allocate(bytes);
    ASSERT_NE(p, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << bytes << " bytes: not 64-byte aligned";
    // Every byte belongs to the caller: overwriting it all must not disturb the
    // accounting of Free below.
    std::memset(p, 0xff, bytes);
    blocks.push_back(p);
    total += static_cast<int64_t>(bytes);
    ExpectStats(be, base + total, base + total, "after Allocate");
  }
  // Largest first, then the others: in_use drops by each size, the peak stays.
  be->Free(blocks[5]);
  ExpectStats(be, base + total - (int64_t{3} << 20), base + total, "after the 3 MiB Free");
  be->Free(nullptr);
  ExpectStats(be, base + total - (int64_t{3} << 20), base + total, "after Free(nullptr)");
  int64_t left = total - (int64_t{3} << 20);
  for (int i = 0; i < 5; ++i) {
    be->Free(blocks[i]);
    left -= static_cast<int64_t>(sizes[i]);
    ExpectStats(be, base + left, base + total, "after Free");
  }
  EXPECT_EQ(left, 0);
}

TEST(MemoryStatsTest, PeakIsTheMaximumSinceTheLastReset) {
  Backend* be = FreshPeak();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  void* a = be->Allocate(1000);
  void* b = be->Allocate(2000);
  be->Free(b);
  void* c = be->Allocate(500);  // below the earlier maximum: the peak stays
  ExpectStats(be, base + 1500, base + 3000, "after a, b, free b, c");
  be->ResetPeakMemory();
  ExpectStats(be, base + 1500, base + 1500, "after ResetPeakMemory");
  void* d = be->Allocate(700);
  be->Free(d);
  ExpectStats(be, base + 1500, base + 2200, "after d came and went");
  be->Free(a);
  be->Free(c);
  ExpectStats(be, base, base + 2200, "after freeing everything");
  be->ResetPeakMemory();
  ExpectStats(be, base, base, "after the second reset");
}

TEST(MemoryStatsTest, SmallBlocksAreNotCached) {
  Backend* be = FreshPeak();
  be->ReleaseCachedMemory();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  const int64_t slack = Slack(be);
  void* a = be->Allocate(4096);
  be->Free(be->Allocate(200 * kKiB));  // below the cache's 256 KiB: malloc
  EXPECT_EQ(Slack(be), slack);
  be->ReleaseCachedMemory();
  ExpectStats(be, base + 4096, base + 4096 + 200 * kKiB, "after ReleaseCachedMemory");
  EXPECT_EQ(Slack(be), slack);
  be->Free(a);
}

// Sizes and capacities: a request of n bytes takes a block of n + 64 (the header)
// rounded up to 1/8 of its power of two; 3 MiB + 64 -> 3.25 MiB, 1 MiB + 64 -> 1.125 MiB,
// 2.9 MiB + 64 -> 3 MiB, which the 3.25 MiB block serves (< 3 MiB * 1.25).
TEST(MemoryStatsTest, FreedLargeBlocksAreReusedUntilReleased) {
  Backend* be = FreshPeak();
  be->ReleaseCachedMemory();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  ASSERT_EQ(Slack(be), 0) << "another test left a large block alive";

  void* p = be->Allocate(3 * kMiB);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  std::memset(p, 0x5a, 3 * kMiB);
  ExpectStats(be, base + 3 * kMiB, base + 3 * kMiB, "3 MiB live");
  EXPECT_EQ(Slack(be), kMiB / 4) << "a live block's capacity slack";
  be->Free(p);
  ExpectStats(be, base, base + 3 * kMiB, "3 MiB freed");
  EXPECT_EQ(Slack(be), 3 * kMiB + kMiB / 4) << "the freed block stays cached";

  const int64_t smaller = 3 * kMiB - 100 * kKiB;
  void* q = be->Allocate(smaller);
  EXPECT_EQ(q, p) << "a slightly smaller request takes the cached block";
  std::memset(q, 0x33, smaller);
  EXPECT_EQ(Slack(be), 3 * kMiB + kMiB / 4 - smaller);
  be->Free(q);

  void* r = be->Allocate(kMiB);  // the 3.25 MiB block is too large to serve 1 MiB
  EXPECT_NE(r, p);
  std::memset(r, 0x11, kMiB);
  EXPECT_EQ(Slack(be), 3 * kMiB + kMiB / 4 + kMiB / 8);
  be->ReleaseCachedMemory();
  ExpectStats(be, base + kMiB, base + 3 * kMiB, "after ReleaseCachedMemory");
  EXPECT_EQ(Slack(be), kMiB / 8) << "only the live block's slack is left";
  be->Free(r);
  be->ReleaseCachedMemory();
  EXPECT_EQ(Slack(be), 0);
}

TEST(MemoryStatsTest, TensorsCountTheirStorageOnceAndWrapCountsNothing) {
  Backend* be = FreshPeak();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  {
    Tensor x = Tensor::Empty({3, 5}, DType::kF32, be);  // 60 bytes
    ExpectStats(be, base + 60, base + 60, "Empty [3, 5] f32");
    Tensor y = Tensor::Zeros({7}, DType::kF64, be);  // 56 bytes
    ExpectStats(be, base + 116, base + 116, "Zeros [7] f64");
    // Views share the storage.
    Tensor view = x.Reshape({15}).Rows(2, 4);
    Tensor copy = y;
    ExpectStats(be, base + 116, base + 116, "views and copies");
    {
      Tensor clone = x.Clone();
      ExpectStats(be, base + 176, base + 176, "Clone");
    }
    ExpectStats(be, base + 116, base + 176, "Clone destroyed");
    const std::vector<float> host(9, 1.5f);
    Tensor from_host = Tensor::FromHost(host.data(), {9}, DType::kF32, be);
    ExpectStats(be, base + 152, base + 176, "FromHost [9] f32");
    Tensor empty = Tensor::Empty({0, 4}, DType::kF32, be);
    ExpectStats(be, base + 152, base + 176, "zero elements");
    x = Tensor();  // the view keeps the storage alive
    ExpectStats(be, base + 152, base + 176, "x reset, its view alive");
    view = Tensor();
    ExpectStats(be, base + 92, base + 176, "the last view of x gone");
  }
  ExpectStats(be, base, base + 176, "every tensor destroyed");

  // Memory owned by someone else (as an mmap'ed safetensors file) is not counted.
  auto owned = std::make_shared<std::vector<float>>(1 << 16, 2.0f);
  {
    Tensor wrapped = Tensor::Wrap(owned->data(), {1 << 16}, DType::kF32, be, owned);
    Tensor rows = wrapped.Rows(10, 100);
    ExpectStats(be, base, base + 176, "Wrap");
  }
  ExpectStats(be, base, base + 176, "Wrap destroyed");
}

// Threads allocate a known set of blocks each and hold them; once all hold theirs,
// in_use is exactly the sum. Then they free them while churning through single
// allocate/free pairs; at the end in_use is back where it started, and the peak lies
// between the held sum and the held sum plus one churn block per thread.
TEST(MemoryStatsTest, ConcurrentAllocateAndFreeStayExact) {
  constexpr int kThreads = 4;
  constexpr int kHeld = 300;
  constexpr int kChurn = 3000;
  constexpr int64_t kMaxChurnBytes = 4096;
  Backend* be = FreshPeak();
  const int64_t base = be->GetMemoryStats().in_use_bytes;

  std::vector<std::vector<size_t>> held_sizes(kThreads);
  int64_t held_total = 0;
  for (int t = 0; t < kThreads; ++t) {
    std::mt19937 rng(100 + t);
    std::uniform_int_distribution<size_t> size(0, 10000);
    for (int i = 0; i < kHeld; ++i) {
      held_sizes[t].push_back(size(rng));
      held_total += static_cast<int64_t>(held_sizes[t].back());
    }
  }
  MemoryStats while_held;
  std::barrier all_hold(kThreads + 1), checked(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<void*> blocks;
      for (size_t bytes : held_sizes[t]) blocks.push_back(be->Allocate(bytes));
      all_hold.arrive_and_wait();
      checked.arrive_and_wait();
      std::mt19937 rng(200 + t);
      std::uniform_int_distribution<int64_t> size(1, kMaxChurnBytes);
      for (int i = 0; i < kChurn; ++i) {
        void* p = be->Allocate(static_cast<size_t>(size(rng)));
        be->Free(p);
        if (i % (kChurn / kHeld) == 0 && !blocks.empty()) {
          be->Free(blocks.back());
          blocks.pop_back();
        }
      }
      for (void* p : blocks) be->Free(p);
    });
  }
  all_hold.arrive_and_wait();
  while_held = be->GetMemoryStats();
  checked.arrive_and_wait();
  for (std::thread& t : threads) t.join();

  EXPECT_EQ(while_held.in_use_bytes, base + held_total);
  EXPECT_EQ(while_held.peak_in_use_bytes, base + held_total);
  be->ReleaseCachedMemory();
  const MemoryStats end = be->GetMemoryStats();
  EXPECT_EQ(end.in_use_bytes, base);
  EXPECT_EQ(end.reserved_bytes, base);
  EXPECT_GE(end.peak_in_use_bytes, base + held_total);
  EXPECT_LE(end.peak_in_use_bytes, base + held_total + kThreads * kMaxChurnBytes);
}

// PMOL_HOST_BLOCK_CACHE=0 when a backend is made: large blocks come from malloc, so a
// freed one is not kept (reserved stays in_use) for memory checkers to see.
TEST(MemoryStatsTest, TheCacheCanBeTurnedOff) {
  ASSERT_EQ(setenv("PMOL_HOST_BLOCK_CACHE", "0", 1), 0);
  CpuBackend off(1);
  ASSERT_EQ(unsetenv("PMOL_HOST_BLOCK_CACHE"), 0);
  void* p = off.Allocate(3 * kMiB);
  ASSERT_NE(p, nullptr);
  std::memset(p, 0x7e, 3 * kMiB);
  EXPECT_EQ(off.GetMemoryStats().in_use_bytes, 3 * kMiB);
  EXPECT_EQ(off.GetMemoryStats().reserved_bytes, 3 * kMiB) << "no capacity slack";
  off.Free(p);
  EXPECT_EQ(off.GetMemoryStats().reserved_bytes, 0) << "nothing cached";
  CpuBackend on(1);
  on.Free(on.Allocate(3 * kMiB));
  EXPECT_GT(on.GetMemoryStats().reserved_bytes, 0) << "cached by default";
  Cpu(1);  // the process-wide backend sets the kernels' pool size back
}

// Threads take and free large blocks (through the block cache) at once: no two live
// blocks overlap (each thread fills its block with its own byte and finds it intact
// before freeing it), and the counts end where they started.
TEST(MemoryStatsTest, ConcurrentLargeBlocksNeverOverlap) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 200;
  Backend* be = FreshPeak();
  be->ReleaseCachedMemory();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  std::vector<std::thread> threads;
  std::vector<int> bad(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(300 + t);
      std::uniform_int_distribution<size_t> size(256 * kKiB, 4 * kMiB);
      const unsigned char mark = static_cast<unsigned char>(0x10 + t);
      for (int i = 0; i < kRounds; ++i) {
        const size_t bytes = size(rng);
        auto* p = static_cast<unsigned char*>(be->Allocate(bytes));
        std::memset(p, mark, bytes);
        std::this_thread::yield();
        for (size_t j = 0; j < bytes; j += 4096) bad[t] += p[j] != mark;
        bad[t] += p[bytes - 1] != mark;
        be->Free(p);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
  EXPECT_EQ(be->GetMemoryStats().in_use_bytes, base);
  be->ReleaseCachedMemory();
  EXPECT_EQ(Slack(be), 0);
}

// ResetPeakMemory racing with allocations must not lose an allocation's raise of the
// peak (a reset that stores a stale in_use after the allocation raised the peak).
TEST(MemoryStatsTest, ResetRacingWithAllocationsLosesNoRaise) {
  Backend* be = FreshPeak();
  const int64_t base = be->GetMemoryStats().in_use_bytes;
  constexpr int kThreads = 3;
  std::barrier start(kThreads + 1), hold(kThreads + 1), release(kThreads + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      std::vector<void*> blocks;
      for (int i = 0; i < 2000; ++i) blocks.push_back(be->Allocate(128));
      hold.arrive_and_wait();
      release.arrive_and_wait();
      for (void* p : blocks) be->Free(p);
    });
  }
  start.arrive_and_wait();
  for (int i = 0; i < 2000; ++i) be->ResetPeakMemory();
  hold.arrive_and_wait();
  const int64_t held = base + int64_t{kThreads} * 2000 * 128;
  EXPECT_EQ(be->GetMemoryStats().in_use_bytes, held);
  release.arrive_and_wait();
  for (std::thread& t : threads) t.join();
  // Only allocations happened between the resets and the hold, so the peak is the held
  // total; read once in_use is back at base, where nothing can lift it.
  ExpectStats(be, base, held, "after the race");
}

}  // namespace
}  // namespace pmol::testing
