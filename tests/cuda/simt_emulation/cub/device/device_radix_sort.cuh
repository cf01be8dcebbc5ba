// Stand-in for CUB's <cub/device/device_radix_sort.cuh> in the CPU emulation
// (simt_emulation.h): DeviceRadixSort::SortPairs as CUB documents it, a stable sort of
// (key, value) pairs by key (keys compared as the integers they are; the bit range
// [begin_bit, end_bit) must be the whole key here), with CUB's two-phase protocol (a call
// with temp_storage null only reports the temporary bytes it needs).
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_CUB_DEVICE_DEVICE_RADIX_SORT_CUH_
#define PMOL_TESTS_CUDA_SIMT_EMULATION_CUB_DEVICE_DEVICE_RADIX_SORT_CUH_

#include <algorithm>
#include <numeric>
#include <vector>

#include "simt_emulation.h"

namespace cub {

struct DeviceRadixSort {
  template <typename Key, typename Value>
  static cudaError_t SortPairs(void* temp_storage, size_t& temp_bytes, const Key* keys_in,
                               Key* keys_out, const Value* values_in, Value* values_out,
                               int n, int begin_bit = 0, int end_bit = sizeof(Key) * 8,
                               cudaStream_t = nullptr) {
    if (temp_storage == nullptr) {
      temp_bytes = 1;
      return cudaSuccess;
    }
    if (begin_bit != 0 || end_bit != static_cast<int>(sizeof(Key) * 8)) return cudaErrorInvalidValue;
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return keys_in[a] < keys_in[b]; });
    std::vector<Key> keys(n);
    std::vector<Value> values(n);
    for (int i = 0; i < n; ++i) {
      keys[i] = keys_in[order[i]];
      values[i] = values_in[order[i]];
    }
    std::copy(keys.begin(), keys.end(), keys_out);
    std::copy(values.begin(), values.end(), values_out);
    return cudaSuccess;
  }
};

}  // namespace cub

#endif  // PMOL_TESTS_CUDA_SIMT_EMULATION_CUB_DEVICE_DEVICE_RADIX_SORT_CUH_
