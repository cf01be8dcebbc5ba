// Stand-in for CUB's <cub/block/block_scan.cuh> in the CPU emulation (simt_emulation.h):
// BlockScan<T, kThreads>::ExclusiveSum(input, output, block_aggregate) as CUB documents it
// (output = the sum of the inputs of the lower threads, block_aggregate = the sum of all),
// through TempStorage in the block's shared memory, ending with the barrier after which
// the caller must synchronise before reusing TempStorage (as with CUB).
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_CUB_BLOCK_BLOCK_SCAN_CUH_
#define PMOL_TESTS_CUDA_SIMT_EMULATION_CUB_BLOCK_BLOCK_SCAN_CUH_

#include "simt_emulation.h"

namespace cub {

template <typename T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T values[kThreads];
  };
  explicit BlockScan(TempStorage& storage) : storage_(storage) {}

  void ExclusiveSum(T input, T& output, T& block_aggregate) {
    storage_.values[threadIdx.x] = input;
    __syncthreads();
    T below = T(0), all = T(0);
    for (int i = 0; i < kThreads; ++i) {
      if (i < static_cast<int>(threadIdx.x)) below += storage_.values[i];
      all += storage_.values[i];
    }
    output = below;
    block_aggregate = all;
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub

#endif  // PMOL_TESTS_CUDA_SIMT_EMULATION_CUB_BLOCK_BLOCK_SCAN_CUH_
