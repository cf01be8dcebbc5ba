// Large host blocks kept for reuse between tensors, so that a training step does not map
// fresh pages (and take a page fault per 4 KiB, with the kernel zeroing each) for every
// activation and gradient it allocates, as it does when malloc hands blocks this large
// to mmap and munmap.
//
// A block's capacity is its size class: the request rounded up to a step of 1/8 of its
// power of two (at least 64 KiB), so that a capacity exceeds the request by at most
// max(64 KiB, 12.5%).
// Take(n) hands out the smallest cached block of capacity in [c, c + c/4], c = class of n
// (best fit; a request can use a block up to 25% larger than its class), or maps a new
// one. Give() keeps the block; while the cached bytes exceed the caller's limit, the
// block cached longest ago is unmapped first. Release() unmaps all cached blocks.
// Blocks of 2 MiB and more are advised to use transparent huge pages.
// Thread-safe (one mutex; the system calls run outside it).
#ifndef PMOL_KERNELS_CPU_HOST_BLOCK_CACHE_H_
#define PMOL_KERNELS_CPU_HOST_BLOCK_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

namespace pmol::cpu {

class HostBlockCache {
 public:
  // Requests of at least this many bytes go through the cache (smaller ones: malloc).
  static constexpr size_t kMinBytes = size_t{256} << 10;

  HostBlockCache() = default;
  HostBlockCache(const HostBlockCache&) = delete;
  HostBlockCache& operator=(const HostBlockCache&) = delete;
  ~HostBlockCache();  // unmaps the cached blocks (blocks still handed out stay mapped)

  // The capacity a request of `bytes` gets from a new mapping (page-aligned).
  static size_t SizeClass(size_t bytes);

  // A page-aligned block of at least `bytes`, its capacity in *capacity; nullptr when the
  // system has no memory left even after the cache was released.
  void* Take(size_t bytes, size_t* capacity);
  // Takes the block back for reuse; then unmaps the oldest cached blocks while more than
  // `limit_bytes` are cached.
  void Give(void* block, size_t capacity, size_t limit_bytes);
  void Release();

  int64_t cached_bytes() const;  // in blocks given back and not yet taken again
  int64_t mapped_bytes() const;  // in all blocks mapped and not unmapped: handed out + cached

 private:
  struct Cached {
    void* block;
    uint64_t age;
  };
  using BySize = std::multimap<size_t, Cached>;

  // Removes the entry from both indexes (mutex held).
  void Forget(BySize::iterator it);

  mutable std::mutex mu_;
  BySize by_size_;
  std::map<uint64_t, BySize::iterator> by_age_;
  uint64_t next_age_ = 0;
  int64_t cached_bytes_ = 0;
  int64_t mapped_bytes_ = 0;
};

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_HOST_BLOCK_CACHE_H_
