// HostBlockCache: size classes, best-fit reuse and oldest-first unmapping; see the header.
#include "kernels/cpu/host_block_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <utility>
#include <vector>

namespace pmol::cpu {
namespace {

constexpr size_t kMinStep = size_t{64} << 10;
constexpr size_t kHugePage = size_t{2} << 20;

void* Map(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // Advice only: where transparent huge pages are off, the block keeps 4 KiB pages.
  if (bytes >= kHugePage) madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

}  // namespace

HostBlockCache::~HostBlockCache() { Release(); }

size_t HostBlockCache::SizeClass(size_t bytes) {
  if (bytes <= kMinStep) return kMinStep;
  const size_t step = std::max(kMinStep, std::bit_floor(bytes) / 8);
  return (bytes + step - 1) / step * step;
}

void* HostBlockCache::Take(size_t bytes, size_t* capacity) {
  const size_t size_class = SizeClass(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_size_.lower_bound(size_class);
    if (it != by_size_.end() && it->first <= size_class + size_class / 4) {
      void* block = it->second.block;
      *capacity = it->first;
      Forget(it);
      return block;
    }
  }
  void* block = Map(size_class);
  if (block == nullptr) {
    Release();  // the cached blocks may be what the system is missing
    block = Map(size_class);
    if (block == nullptr) return nullptr;
  }
  std::lock_guard<std::mutex> lock(mu_);
  mapped_bytes_ += static_cast<int64_t>(size_class);
  *capacity = size_class;
  return block;
}

void HostBlockCache::Give(void* block, size_t capacity, size_t limit_bytes) {
  std::vector<std::pair<void*, size_t>> unmap;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t age = next_age_++;
    auto it = by_size_.emplace(capacity, Cached{block, age});
    by_age_.emplace(age, it);
    cached_bytes_ += static_cast<int64_t>(capacity);
    while (cached_bytes_ > static_cast<int64_t>(limit_bytes) && !by_age_.empty()) {
      auto oldest = by_age_.begin()->second;
      unmap.emplace_back(oldest->second.block, oldest->first);
      mapped_bytes_ -= static_cast<int64_t>(oldest->first);
      Forget(oldest);
    }
  }
  for (const auto& [p, bytes] : unmap) munmap(p, bytes);
}

void HostBlockCache::Release() {
  std::vector<std::pair<void*, size_t>> unmap;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [bytes, cached] : by_size_) unmap.emplace_back(cached.block, bytes);
    mapped_bytes_ -= cached_bytes_;
    cached_bytes_ = 0;
    by_size_.clear();
    by_age_.clear();
  }
  for (const auto& [p, bytes] : unmap) munmap(p, bytes);
}

void HostBlockCache::Forget(BySize::iterator it) {
  cached_bytes_ -= static_cast<int64_t>(it->first);
  by_age_.erase(it->second.age);
  by_size_.erase(it);
}

int64_t HostBlockCache::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_bytes_;
}

int64_t HostBlockCache::mapped_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mapped_bytes_;
}

}  // namespace pmol::cpu
