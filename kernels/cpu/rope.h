// Rotary position embedding on the CPU, HF "rotate_half" layout: within each head of
// width d, element j pairs with j + d/2 and both rotate by angle(pos, j):
//   x'_j = x_j c - x_{j+d/2} s,   x'_{j+d/2} = x_{j+d/2} c + x_j s
// with c = cos[pos, j], s = sin[pos, j] (tables [positions, d/2]). The inverse rotation
// (s -> -s) is the exact backward, since the rotation is orthogonal.
#ifndef PMOL_KERNELS_CPU_ROPE_H_
#define PMOL_KERNELS_CPU_ROPE_H_

#include <cstdint>

namespace pmol::cpu {

template <typename T>
void ApplyRope(T* x, int64_t tokens, int64_t heads, int64_t head_dim, const T* cos, const T* sin,
               const int32_t* positions, bool inverse);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_ROPE_H_
