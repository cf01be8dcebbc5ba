// Dropout's keep mask on the CPU; see dropout.h.
#include "kernels/cpu/dropout.h"

#include "kernels/cpu/parallel.h"
#include "kernels/random_bits.h"

namespace pmol::cpu {

template <typename T>
void DropoutKeep(uint64_t key, double p, T kept, int64_t n, T* keep) {
  ParallelFor(n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      keep[i] = UniformAt(key, static_cast<uint64_t>(i)) < p ? T(0) : kept;
    }
  });
}

template void DropoutKeep<float>(uint64_t, double, float, int64_t, float*);
template void DropoutKeep<double>(uint64_t, double, double, int64_t, double*);
template void DropoutKeep<uint16_t>(uint64_t, double, uint16_t, int64_t, uint16_t*);

}  // namespace pmol::cpu
