// HostBlockCache (kernels/cpu/host_block_cache.h) on its own: the size classes (the
// request rounded up to 1/8 of its power of two, at least 64 KiB: page multiples, at
// most max(64 KiB, 12.5%) over the request); best-fit reuse within [class, class * 1.25]; the limit, enforced by
// unmapping the block cached longest ago; Release. Sizes are exact, so no tolerance.
#include "kernels/cpu/host_block_cache.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace pmol::cpu {
namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * kKiB;

TEST(HostBlockCacheTest, SizeClasses) {
  EXPECT_EQ(HostBlockCache::SizeClass(1), 64 * kKiB);
  EXPECT_EQ(HostBlockCache::SizeClass(64 * kKiB), 64 * kKiB);
  EXPECT_EQ(HostBlockCache::SizeClass(64 * kKiB + 1), 128 * kKiB);
  EXPECT_EQ(HostBlockCache::SizeClass(300 * kKiB), 320 * kKiB);   // step 64 KiB
  EXPECT_EQ(HostBlockCache::SizeClass(kMiB + 1), kMiB + 128 * kKiB);  // step 128 KiB
  EXPECT_EQ(HostBlockCache::SizeClass(3 * kMiB), 3 * kMiB);
  EXPECT_EQ(HostBlockCache::SizeClass(100 * kMiB + 5), 104 * kMiB);  // step 8 MiB
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<size_t> size(1, size_t{1} << 34);
  for (int i = 0; i < 10000; ++i) {
    const size_t n = size(rng);
    const size_t c = HostBlockCache::SizeClass(n);
    ASSERT_GE(c, n);
    ASSERT_EQ(c % 4096, 0u) << n;
    ASSERT_LE(c - n, std::max(64 * kKiB, n / 8)) << n;
  }
}

TEST(HostBlockCacheTest, BestFitReuse) {
  HostBlockCache cache;
  size_t cap_a = 0, cap_b = 0, cap = 0;
  void* a = cache.Take(4 * kMiB, &cap_a);
  void* b = cache.Take(2 * kMiB, &cap_b);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(cap_a, 4 * kMiB);
  EXPECT_EQ(cap_b, 2 * kMiB);
  std::memset(a, 1, cap_a);
  std::memset(b, 2, cap_b);
  EXPECT_EQ(cache.mapped_bytes(), static_cast<int64_t>(6 * kMiB));
  cache.Give(a, cap_a, 100 * kMiB);
  cache.Give(b, cap_b, 100 * kMiB);
  EXPECT_EQ(cache.cached_bytes(), static_cast<int64_t>(6 * kMiB));

  // 1.8 MiB -> class 1.875 MiB; the smallest block >= that is the 2 MiB one.
  EXPECT_EQ(cache.Take(1800 * kKiB, &cap), b);
  EXPECT_EQ(cap, 2 * kMiB);
  // 3.5 MiB: class 3.5 MiB; the 4 MiB block is within 25%.
  EXPECT_EQ(cache.Take(3584 * kKiB, &cap), a);
  EXPECT_EQ(cap, 4 * kMiB);
  EXPECT_EQ(cache.cached_bytes(), 0);
  cache.Give(a, 4 * kMiB, 100 * kMiB);
  // 1 MiB: the 4 MiB block is too large, so a new one is mapped.
  void* c = cache.Take(kMiB, &cap);
  EXPECT_NE(c, a);
  EXPECT_EQ(cap, kMiB);
  EXPECT_EQ(cache.mapped_bytes(), static_cast<int64_t>(7 * kMiB));
  cache.Give(b, 2 * kMiB, 100 * kMiB);
  cache.Give(c, kMiB, 100 * kMiB);
  cache.Release();
  EXPECT_EQ(cache.cached_bytes(), 0);
  EXPECT_EQ(cache.mapped_bytes(), 0);
}

TEST(HostBlockCacheTest, OverTheLimitTheOldestIsUnmapped) {
  HostBlockCache cache;
  void* blocks[3];
  size_t cap = 0;
  for (void*& p : blocks) {
    p = cache.Take(kMiB, &cap);
    ASSERT_EQ(cap, kMiB);
  }
  cache.Give(blocks[0], kMiB, 2 * kMiB);
  cache.Give(blocks[1], kMiB, 2 * kMiB);
  EXPECT_EQ(cache.cached_bytes(), static_cast<int64_t>(2 * kMiB));
  cache.Give(blocks[2], kMiB, 2 * kMiB);  // 3 MiB cached > 2 MiB: blocks[0] goes
  EXPECT_EQ(cache.cached_bytes(), static_cast<int64_t>(2 * kMiB));
  EXPECT_EQ(cache.mapped_bytes(), static_cast<int64_t>(2 * kMiB));
  std::set<void*> taken;
  taken.insert(cache.Take(kMiB, &cap));
  taken.insert(cache.Take(kMiB, &cap));
  EXPECT_EQ(taken, (std::set<void*>{blocks[1], blocks[2]}));
  EXPECT_EQ(cache.mapped_bytes(), static_cast<int64_t>(2 * kMiB));
  // A limit of 0 keeps nothing.
  for (void* p : taken) cache.Give(p, kMiB, 0);
  EXPECT_EQ(cache.cached_bytes(), 0);
  EXPECT_EQ(cache.mapped_bytes(), 0);
}

}  // namespace
}  // namespace pmol::cpu
