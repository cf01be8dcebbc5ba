// Dropout's keep mask on the CPU (backend.h DropoutKeep): keep[i] = (u_i < p ? 0 : kept),
// kept the one of T, with u_i = UniformAt(key, i) (kernels/random_bits.h), elements split
// over the kernels' threads. Each element depends on (key, i) alone, so the mask does not
// depend on the thread count and equals the GPU's. T is the storage type (uint16_t: bf16
// bits).
#ifndef PMOL_KERNELS_CPU_DROPOUT_H_
#define PMOL_KERNELS_CPU_DROPOUT_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void DropoutKeep(uint64_t key, double p, T kept, int64_t n, T* keep);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_DROPOUT_H_
