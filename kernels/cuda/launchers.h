// Host-side entry points of the CUDA kernels (the .cu files), callable from code built
// by the host compiler (cuda_backend.cc). Every launcher enqueues work on `stream` and
// returns without waiting; all pointers are device pointers. T is the storage type of the
// operands: float, double, or (where a launcher says so) Bf16 of kernels/dtype.h, the
// mixed precision of kernels/backend.h. Kernels compute in Accum<T> (float for Bf16, T
// otherwise): every scalar argument, local, accumulator, shared-memory buffer and side
// statistic (inv_rms, cos/sin, lse, logp, column-block dots) is of that type, and a Bf16
// output is rounded once when written. The templates are explicitly instantiated in the
// .cu files. The math of each op is the one documented in kernels/backend.h; the .cu file
// of each group states how it is computed.
//
// Some launchers need device scratch memory: they come with a `...ScratchBytes`
// function, and the caller passes a buffer of at least that many bytes. Scratch is
// only used in stream order, so one buffer can serve every launch on a stream. Where the
// scratch holds partial sums of the compute type, its size function takes
// accum_size = sizeof(Accum<T>).
#ifndef PMOL_KERNELS_CUDA_LAUNCHERS_H_
#define PMOL_KERNELS_CUDA_LAUNCHERS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "kernels/dtype.h"

namespace pmol::cuda {

// The compute type of operands stored as T (AccumDType of kernels/dtype.h).
template <typename T>
struct AccumOf {
  using type = T;
};
template <>
struct AccumOf<Bf16> {
  using type = float;
};
template <typename T>
using Accum = typename AccumOf<T>::type;

// elementwise.cu: Fill of float, double and uint16_t (bf16 and f16 by bit pattern); Axpy,
// Scale and AddBias of float, double and Bf16.
template <typename T>
void LaunchFill(T* x, T value, int64_t n, cudaStream_t stream);
template <typename T>
void LaunchAxpy(Accum<T> alpha, const T* x, T* y, int64_t n, cudaStream_t stream);
template <typename T>
void LaunchScale(Accum<T> alpha, T* x, int64_t n, cudaStream_t stream);
template <typename T>
void LaunchAddBias(T* y, const T* bias, int64_t rows, int64_t cols, cudaStream_t stream);

// column_sum.cu: dbias[c] += sum_r dy[r, c] (deterministic, no atomics; float, double,
// Bf16 dy; dbias of Accum<T>).
size_t SumRowsScratchBytes(size_t accum_size, int64_t rows, int64_t cols);
template <typename T>
void LaunchSumRows(const T* dy, int64_t rows, int64_t cols, Accum<T>* dbias, void* scratch,
                   cudaStream_t stream);

// column_blocks.cu: per-row column-block scaling and dots (kernels/backend.h), row copies
// (float, double, Bf16).
template <typename T>
void LaunchScaleColumnBlocks(const T* x, const T* s, int64_t rows, int64_t blocks,
                             int64_t width, Accum<T> alpha, T* out, cudaStream_t stream);
template <typename T>
void LaunchColumnBlockDots(const T* x, const T* y, int64_t rows, int64_t blocks, int64_t width,
                           Accum<T> alpha, Accum<T>* out, cudaStream_t stream);
template <typename T>
void LaunchCopyRows(const T* src, int64_t src_stride, const int32_t* src_rows, T* dst,
                    int64_t dst_stride, const int32_t* dst_rows, int64_t n, int64_t width,
                    bool accumulate, cudaStream_t stream);

// experts.cu: the PMoL experts' projections with the gates fused in (kernels/backend.h
// ExpertsDown, ExpertsUpBackward). The epilogues finish products p = x a^T or q = dy b
// that a GEMM wrote packed in Accum<T> (float, double, Bf16; p may be h or hs, q may be
// dh, when they are of Accum<T>); the bf16 tensor-core kernels compute the products too,
// for the shapes ExpertsMmaApplies accepts (k and cols multiples of 8, cols <= 128, the
// listed matrices 16-byte aligned).
template <typename T>
void LaunchExpertsDownEpilogue(const Accum<T>* p, const T* g, int64_t rows, int64_t blocks,
                               int64_t width, Accum<T> alpha, T* h, T* hs, cudaStream_t stream);
template <typename T>
void LaunchExpertsUpBackwardEpilogue(const Accum<T>* q, const T* h, const T* g, int64_t rows,
                                     int64_t blocks, int64_t width, Accum<T> alpha,
                                     Accum<T>* dg, T* dh, cudaStream_t stream);
bool ExpertsMmaApplies(int64_t k, int64_t cols, std::initializer_list<const void*> matrices);
void LaunchExpertsDownMma(const Bf16* x, const Bf16* a, const Bf16* g, int64_t rows, int64_t k,
                          int64_t blocks, int64_t width, float alpha, Bf16* h, Bf16* hs,
                          cudaStream_t stream);
void LaunchExpertsUpBackwardMma(const Bf16* dy, const Bf16* b, const Bf16* h, const Bf16* g,
                                int64_t rows, int64_t d, int64_t blocks, int64_t width,
                                float alpha, float* dg, Bf16* dh, cudaStream_t stream);

// convert.cu: any two of f32, f64, bf16, f16 (bit-identical to kernels/dtype.h).
void LaunchConvert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n,
                   cudaStream_t stream);

// swiglu.cu (float, double, Bf16)
template <typename T>
void LaunchSwiGluForward(const T* gate, const T* up, T* out, int64_t n, cudaStream_t stream);
template <typename T>
void LaunchSwiGluBackward(const T* gate, const T* up, const T* dout, T* dgate, T* dup,
                          int64_t n, cudaStream_t stream);

// rms_norm.cu (float, double, Bf16); residual and residual_grad may be null (no fused
// residual add). sum_out may be x, dx may be residual_grad.
template <typename T>
void LaunchRmsNormForward(const T* x, const T* residual, const T* w, double eps, int64_t rows,
                          int64_t dim, T* sum_out, T* y, Accum<T>* inv_rms, cudaStream_t stream);
size_t RmsNormBackwardScratchBytes(size_t accum_size, int64_t rows, int64_t dim);
template <typename T>
void LaunchRmsNormBackward(const T* x, const T* w, const Accum<T>* inv_rms, const T* dy,
                           const T* residual_grad, int64_t rows, int64_t dim, T* dx,
                           Accum<T>* dw, void* scratch, cudaStream_t stream);

// rope.cu (float, double, Bf16)
template <typename T>
void LaunchApplyRope(T* x, int64_t tokens, int64_t heads, int64_t head_dim,
                     const Accum<T>* cos, const Accum<T>* sin, const int32_t* positions,
                     bool inverse, cudaStream_t stream);

// embedding.cu (float, double, Bf16)
template <typename T>
void LaunchEmbeddingForward(const T* table, const int32_t* ids, int64_t n, int64_t dim, T* out,
                            cudaStream_t stream);
size_t EmbeddingBackwardScratchBytes(int64_t n);
// dtable of Table: T (an activation gradient) or Accum<T> (the weight gradient).
template <typename T, typename Table>
void LaunchEmbeddingBackward(const T* dout, const int32_t* ids, int64_t n, int64_t dim,
                             Table* dtable, void* scratch, cudaStream_t stream);

// log_softmax.cu (float, double, Bf16)
template <typename T>
void LaunchLogSoftmaxGather(const T* logits, const int32_t* targets, int64_t rows,
                            int64_t vocab, Accum<T>* logp, Accum<T>* lse, cudaStream_t stream);
template <typename T>
void LaunchLogSoftmaxGatherBackward(const T* logits, const int32_t* targets,
                                    const Accum<T>* lse, const Accum<T>* dlogp, int64_t rows,
                                    int64_t vocab, T* dlogits, cudaStream_t stream);

// row_softmax.cu (float, double)
template <typename T>
void LaunchRowSoftmax(const T* x, int64_t rows, int64_t cols, T scale, T* y, cudaStream_t stream);
template <typename T>
void LaunchRowSoftmaxBackward(const T* y, const T* dy, int64_t rows, int64_t cols, T scale, T* dx,
                              cudaStream_t stream);

// router_topk.cu (float, double)
template <typename T>
void LaunchRouterTopK(const T* probs, int64_t rows, int64_t slots, int64_t experts, int64_t k,
                      int64_t capacity, T* selected, T* gates, T* top, cudaStream_t stream);
template <typename T>
void LaunchRouterTopKBackward(const T* selected, const T* gates, const T* top, const T* dgates,
                              int64_t rows, int64_t slots, int64_t experts, T* dg,
                              cudaStream_t stream);

// dropout.cu (float, double, uint16_t = bf16 bits)
template <typename T>
void LaunchDropoutKeep(uint64_t key, double p, T kept, int64_t n, T* keep, cudaStream_t stream);

// router_losses.cu (float, double)
template <typename T>
void LaunchRouterGroupLoss(const T* probs, const int32_t* labels, const int32_t* expert_group,
                           int64_t rows, int64_t slots, int64_t experts, int64_t groups,
                           double label_smoothing, double grad_scale, T* ce, T* dprobs,
                           cudaStream_t stream);
template <typename T>
void LaunchRouterBalanceLoss(const T* mass, int64_t mass_stride, const int32_t* expert_group,
                             int64_t count, int64_t slots, int64_t experts, int64_t groups,
                             T* loss, T* dmass, cudaStream_t stream);

// attention_forward.cu / attention_backward.cu (float, double, Bf16). Layouts as in
// backend.h: q/out [B,T,Hq,D], k/v [B,T,Hkv,D], lse [B,Hq,T]. Bf16 with head_dim 32, 64
// or 128 (and 16-byte aligned tensors) is handed to the tensor-core kernels of
// attention_mma.cu.
struct AttentionDims {
  int64_t batch;
  int64_t seq;
  int64_t q_heads;
  int64_t kv_heads;
  int64_t head_dim;
  double scale;
  const int32_t* key_holes;  // i32 [batch * seq, 2] or null (AttentionShape::key_holes)
};
// The largest head_dim the attention kernels accept for a compute type of accum_size
// bytes (the shared-memory tiles are of Accum<T>).
int64_t AttentionMaxHeadDim(size_t accum_size);
template <typename T>
void LaunchAttentionForward(const AttentionDims& dims, const T* q, const T* k, const T* v,
                            T* out, Accum<T>* lse, cudaStream_t stream);
size_t AttentionBackwardScratchBytes(size_t accum_size, const AttentionDims& dims);
template <typename T>
void LaunchAttentionBackward(const AttentionDims& dims, const T* q, const T* k, const T* v,
                             const T* out, const Accum<T>* lse, const T* dout, T* dq, T* dk,
                             T* dv, void* scratch, cudaStream_t stream);

// optimizer.cu (float, double). AdamW: one torch.optim.AdamW update in place (the fields mirror
// AdamWScalars of kernels/backend.h, which this header does not include).
struct AdamWLaunchScalars {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  double bias_correction1;
  double bias_correction2;
};
template <typename T>
void LaunchAdamWStep(const AdamWLaunchScalars& s, T* p, const T* g, T* m, T* v, int64_t n,
                     cudaStream_t stream);
// SumSquares: *acc (one double) += sum x^2 in double, deterministic (no atomics).
size_t SumSquaresScratchBytes(int64_t n);
template <typename T>
void LaunchSumSquares(const T* x, int64_t n, double* acc, void* scratch, cudaStream_t stream);

}  // namespace pmol::cuda

#endif  // PMOL_KERNELS_CUDA_LAUNCHERS_H_
