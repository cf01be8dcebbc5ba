// The host side of the CUDA runtime as the CPU emulation needs it to run pmol's CUDA
// backend (kernels/cuda/cuda_backend.cc) unchanged: one emulated "GPU" whose memory is the
// host's, streams that do nothing (every emulated launch runs to completion when it is
// made), copies that are memcpy, and a stream-ordered pool that frees at once and counts
// bytes in use, their high-water mark and the bytes held (the same as in use: it caches
// nothing). Built with AddressSanitizer, the bytes past each allocation's size are
// unaddressable (PoisonPast). Errors follow the runtime's rules that the backend relies
// on: an impossible allocation fails with cudaErrorMemoryAllocation and is not sticky.
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_RUNTIME_API_EMULATION_H_
#define PMOL_TESTS_CUDA_SIMT_EMULATION_RUNTIME_API_EMULATION_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#define CUDART_VERSION 13000

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorCudartUnloading = 4,
  cudaErrorContextIsDestroyed = 709,
};
typedef struct EmulatedStream* cudaStream_t;
typedef struct EmulatedPool* cudaMemPool_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
enum cudaMemPoolAttr {
  cudaMemPoolAttrReleaseThreshold = 4,
  cudaMemPoolAttrReservedMemCurrent = 5,
  cudaMemPoolAttrUsedMemCurrent = 7,
  cudaMemPoolAttrUsedMemHigh = 8,
};
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1 };
struct cudaPointerAttributes {
  cudaMemoryType type = cudaMemoryTypeUnregistered;
};
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
constexpr unsigned cudaStreamNonBlocking = 1;

namespace simt {

// The emulated device's allocations: pointer -> bytes, and the pool's counters.
struct Memory {
  std::mutex mu;
  std::map<void*, size_t> blocks;
  uint64_t used = 0, high = 0;
  cudaError_t last_error = cudaSuccess;
};
inline Memory& DeviceMemory() {
  static Memory* memory = new Memory;  // never destroyed: the backend frees at exit
  return *memory;
}

// Under AddressSanitizer (the memcheck twins): the bytes of a buffer past the `used` ones
// that were asked for, up to its `capacity`, become unaddressable, so a kernel that reads
// or writes past its allocation is reported even inside the allocator's rounding.
inline void PoisonPast(void* buffer, size_t used, size_t capacity) {
#if defined(__SANITIZE_ADDRESS__)
  if (capacity > used) ASAN_POISON_MEMORY_REGION(static_cast<char*>(buffer) + used, capacity - used);
#else
  (void)buffer, (void)used, (void)capacity;
#endif
}

}  // namespace simt

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    default: return "emulated error";
  }
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated";
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = simt::DeviceMemory().last_error;
  simt::DeviceMemory().last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return simt::DeviceMemory().last_error; }

inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int /*device*/) {
  std::strcpy(prop->name, "SIMT emulation on the CPU");
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int /*device*/) { return cudaSuccess; }
inline cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int /*device*/) {
  static int the_pool;
  *pool = reinterpret_cast<cudaMemPool_t>(&the_pool);
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr attr, void* value) {
  simt::Memory& m = simt::DeviceMemory();
  std::lock_guard<std::mutex> lock(m.mu);
  if (attr == cudaMemPoolAttrUsedMemHigh) m.high = m.used;  // only a reset to 0 is allowed
  (void)value;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr attr, void* value) {
  simt::Memory& m = simt::DeviceMemory();
  std::lock_guard<std::mutex> lock(m.mu);
  uint64_t v = 0;
  if (attr == cudaMemPoolAttrUsedMemCurrent || attr == cudaMemPoolAttrReservedMemCurrent) v = m.used;
  if (attr == cudaMemPoolAttrUsedMemHigh) v = m.high;
  std::memcpy(value, &v, sizeof(v));
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }
inline cudaError_t cudaMallocFromPoolAsync(void** ptr, size_t bytes, cudaMemPool_t,
                                           cudaStream_t) {
  const size_t capacity = (bytes + 255) / 256 * 256;
  *ptr = bytes > (size_t{1} << 40) ? nullptr : std::aligned_alloc(256, capacity);
  if (*ptr == nullptr) return cudaErrorMemoryAllocation;
  simt::PoisonPast(*ptr, bytes, capacity);
  simt::Memory& m = simt::DeviceMemory();
  std::lock_guard<std::mutex> lock(m.mu);
  m.blocks[*ptr] = bytes;
  m.used += bytes;
  if (m.used > m.high) m.high = m.used;
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) {
  simt::Memory& m = simt::DeviceMemory();
  std::lock_guard<std::mutex> lock(m.mu);
  auto it = m.blocks.find(ptr);
  if (it == m.blocks.end()) return cudaErrorInvalidValue;
  m.used -= it->second;
  m.blocks.erase(it);
  std::free(ptr);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t) {
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void*) {
  attributes->type = cudaMemoryTypeUnregistered;  // host memory is pageable here
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned /*flags*/) {
  static int the_stream;
  *stream = reinterpret_cast<cudaStream_t>(&the_stream);
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  return cudaStreamCreateWithFlags(stream, 0);
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel, cudaFuncAttribute, int) {
  return cudaSuccess;
}

#endif  // PMOL_TESTS_CUDA_SIMT_EMULATION_RUNTIME_API_EMULATION_H_
