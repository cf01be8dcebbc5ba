// Element-wise CPU kernels (templated on the compute type T = float or double):
//   Fill x = v;  Axpy y += a*x;  Scale x *= a;  AddBias y[r,c] += b[c];
//   SumRows db[c] += sum_r dy[r,c];  Convert between f32/f64/bf16/f16;
//   SwiGLU out = silu(g)*u, silu(g) = g*s, s = sigmoid(g);
//     backward: dg = dout*u*s*(1 + g*(1-s)),  du = dout*silu(g);
//   Embedding out[i] = table[ids[i]];  backward dtable[ids[i]] += dout[i].
#ifndef PMOL_KERNELS_CPU_ELEMENTWISE_H_
#define PMOL_KERNELS_CPU_ELEMENTWISE_H_

#include <cstdint>

#include "kernels/dtype.h"

namespace pmol::cpu {

template <typename T> void Fill(T* x, T value, int64_t n);
template <typename T> void Axpy(T alpha, const T* x, T* y, int64_t n);
template <typename T> void Scale(T alpha, T* x, int64_t n);
template <typename T> void AddBias(T* y, const T* bias, int64_t rows, int64_t cols);
template <typename T> void SumRows(const T* dy, int64_t rows, int64_t cols, T* dbias);
void Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n);

template <typename T> void SwiGluForward(const T* gate, const T* up, T* out, int64_t n);
template <typename T>
void SwiGluBackward(const T* gate, const T* up, const T* dout, T* dgate, T* dup, int64_t n);

template <typename T>
void EmbeddingForward(const T* table, const int32_t* ids, int64_t n, int64_t dim, T* out);
template <typename T>
void EmbeddingBackward(const T* dout, const int32_t* ids, int64_t n, int64_t dim, T* dtable);

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_ELEMENTWISE_H_
