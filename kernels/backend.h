// The compute interface every device implements (kernels/cpu, kernels/cuda).
//
// All pointers are device pointers of the backend; `dt` is the type of the floating-point
// operands: f32, f64 or bf16 (mixed precision, below). Matrices are row-major.
// Operations are asynchronous with respect to the host where the device allows it;
// Synchronize() waits. The math of each operation:
//
//   Gemm:       C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C,  op = transpose or not
//               GemmBias: C[m,n] = op(A) op(B) + bias[n] (broadcast over the rows)
//   RmsNorm:    y = x * r * w,  r = 1/sqrt(mean(x^2) + eps) per row (r saved for backward)
//               dx = r*(w*dy) - x * r^3 * mean(x*w*dy);  dw += sum_rows dy*x*r
//               with the residual add fused in (a decoder block's x2 = x + o, h2 = norm(x2)):
//               forward s = x + residual, stored, then y = norm(s); backward
//               dx = norm-backward(dy) + residual_grad (the gradient reaching s by the skip)
//   Rope:       HF "rotate_half" convention on each head of width d, pairs (j, j+d/2):
//               x'_j = x_j cos_j - x_{j+d/2} sin_j,  x'_{j+d/2} = x_{j+d/2} cos_j + x_j sin_j
//               with cos/sin tables [positions, d/2]; inverse=true rotates by -angle
//               (the backward of the rotation).
//   SwiGlu:     out = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   Attention:  causal grouped-query attention, q [B,T,Hq,D], k/v [B,T,Hkv,D],
//               query head h reads kv head h / (Hq/Hkv); out [B,T,Hq,D];
//               lse [B,Hq,T] = logsumexp of the scaled, masked scores (for backward).
//               Query i of row b sees key j iff j <= i and j is outside its key hole
//               [hb, he) = [key_holes[2(bT+i)], key_holes[2(bT+i)+1]) when key_holes is
//               given (begin >= end: no hole; a query always sees its own key). The hole is how two sequences share a
//               prefix in one row: [prefix | reply A | reply B], reply B skipping reply A.
//   LogSoftmaxGather: logp[r] = logits[r, t_r] - logsumexp(logits[r,:]); rows with
//               t_r < 0 give logp = 0 and zero gradient.
//               backward: dlogits[r,:] = dlogp[r] * (onehot(t_r) - softmax(logits[r,:]))
//               (dlogits may be logits: the backward works in place)
//   RowSoftmax: y[r,:] = softmax(scale * x[r,:]) over the cols of each row (a router's
//               probabilities, scale = 1/temperature);
//               backward: dx[r,j] = scale * y[r,j] * (dy[r,j] - sum_i y[r,i] dy[r,i])
//   RouterTopK: per row of probabilities g [rows, slots], the k largest (ties: the lower
//               slot first) are selected, top[r] = their sum (largest first),
//               gates[r,e] = g[r,e] / top[r] for selected e < experts, else 0. With
//               capacity C > 0 expert e keeps the first C rows (in row order) that
//               selected it; on a later row it is dropped: gate 0, no gradient.
//               selected[r,j] = 1 (routed), -1 (selected, dropped), 0 (not selected);
//               backward: c = sum_{e<experts} dgates[r,e] gates[r,e],
//               dg[r,j] += [selected != 0] * (u_j - c) / top[r], u_j = dgates[r,j] when
//               j < experts and selected[r,j] = 1, else 0
//   RouterGroupLoss / RouterBalanceLoss: PMoL's auxiliary router losses, per position
//               (the group soft loss of probabilities g [rows, slots] against a label)
//               and per router (the balance loss of its weighted slot mass); the
//               formulas are in router_loss_math.h, which both backends run.
//
// Mixed precision, dt = bf16 (both backends): bf16 storage, f32 math. Every operand of
// type dt is widened to f32 (exactly) when read; the operation's math runs in f32 as it
// does for dt = f32, with the same f32 accumulators; each output of type dt is rounded
// once to bf16 (nearest even) when written. These operands are of AccumDType(dt) (f32
// for bf16, dt itself for f32 and f64) instead, because a backward or a loss reads them
// or because they are reductions:
//   RmsNorm inv_rms; Rope cos/sin; Attention lse; LogSoftmaxGather logp and lse;
//   ColumnBlockDots out; ExpertsUpBackward dg; GemmTo's C when the caller asks for c_dt = AccumDType(dt) (a
//   parameter gradient accumulated in f32 from bf16 activations, or f32 logits); the
//   parameter gradients SumRows dbias, RmsNormBackward dw, and EmbeddingBackward's
//   dtable when the caller asks for table_dt = AccumDType(dt).
// RmsNormForward with a residual rounds s = x + residual to bf16 when it stores it, and
// normalizes that stored s (the value the backward reads), not the f32 sum.
// One exception to "the same f32 math": CUDA attention with head_dim 32, 64 or 128 runs
// on tensor cores (FlashAttention-2 style) and rounds the probabilities P (for P V and
// P^T dO) and dS (for dS K and dS^T Q) to bf16 before those products; the result stays
// within 1e-2 of each output's largest entry of the f64 attention (tests/cuda).
// RowSoftmax, RouterTopK(Backward), RouterGroupLoss, RouterBalanceLoss, AdamWStep and
// SumSquares take f32 and f64 only: router math and optimizer state are never bf16 (they
// run on f32 master copies).
//
// Memory accounting (GetMemoryStats) covers what Allocate hands out and Free returns:
//   in_use   = bytes allocated and not yet freed (CPU: exactly the bytes requested; CUDA:
//              the stream-ordered pool's count, which rounds each block up and includes
//              the backend's own scratch buffer);
//   peak     = max of in_use since the last ResetPeakMemory(), which sets peak = in_use;
//   reserved = bytes held from the system, >= in_use: freed blocks stay cached for reuse
//              (CPU: blocks of 256 KiB and more, in kernels/cpu/host_block_cache.h, and
//              the rounding of those in use; CUDA: the pool's reservation).
// ReleaseCachedMemory() hands what is reserved but not in use back to the system (CUDA:
// trims the pool once the stream's work is done, so reserved drops to about in_use, and
// another process can use the memory; CPU: unmaps the cached blocks).
// Memory a Tensor wraps without allocating it (Tensor::Wrap, e.g. an mmap'ed safetensors
// file) is not counted. The counters are per backend (per process and device), not per
// thread.
#ifndef PMOL_KERNELS_BACKEND_H_
#define PMOL_KERNELS_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace pmol {

enum class DeviceType : uint8_t { kCpu, kCuda };

struct AttentionShape {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  double scale = 0.0;  // usually 1/sqrt(head_dim)
  // i32 [batch * seq, 2] on the backend's device, or null (plain causal): per query, the
  // row-local key range it must not see (see the file comment).
  const int32_t* key_holes = nullptr;
};

// The scalars of one AdamW update (Backend::AdamWStep); step t >= 1 is folded into the
// bias corrections, which the caller computes once per step in double.
struct AdamWScalars {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double bias_correction1 = 1.0;  // 1 - beta1^t
  double bias_correction2 = 1.0;  // 1 - beta2^t
};

// Bytes of device memory held by this backend's allocator (Allocate/Free); see the file
// comment for what each backend counts.
struct MemoryStats {
  int64_t in_use_bytes = 0;       // allocated and not yet freed
  int64_t peak_in_use_bytes = 0;  // max of in_use_bytes since the last ResetPeakMemory()
  int64_t reserved_bytes = 0;     // held from the system (>= in_use; the cache on CUDA)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceType device() const = 0;
  virtual std::string Name() const = 0;

  // Memory. Allocate returns nullptr only when the device is out of memory.
  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual void CopyFromHost(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void CopyToHost(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void CopyOnDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual void Synchronize() = 0;
  // Thread-safe, like Allocate and Free.
  virtual MemoryStats GetMemoryStats() = 0;
  virtual void ResetPeakMemory() = 0;  // peak <- current in-use
  virtual void ReleaseCachedMemory() = 0;

  // Element-wise and reductions.
  virtual void Fill(DType dt, void* x, double value, int64_t n) = 0;
  // y += alpha * x
  virtual void Axpy(DType dt, double alpha, const void* x, void* y, int64_t n) = 0;
  // x *= alpha
  virtual void Scale(DType dt, double alpha, void* x, int64_t n) = 0;
  // Dropout's keep mask: keep[i] = (u_i < p ? 0 : 1) for i < n, dt f32, f64 or bf16,
  // u_i = UniformAt(key, i) of random_bits.h: the same mask on every backend for a given
  // key. (The 1 / (1 - p) scale is the caller's, applied in its f32/f64 math: in bf16 it
  // would be rounded.)
  virtual void DropoutKeep(DType dt, uint64_t key, double p, int64_t n, void* keep) = 0;
  // y[r, c] += bias[c]
  virtual void AddBias(DType dt, void* y, const void* bias, int64_t rows, int64_t cols) = 0;
  // dbias[c] += sum_r dy[r, c]; dbias is of AccumDType(dt) (a parameter gradient).
  virtual void SumRows(DType dt, const void* dy, int64_t rows, int64_t cols, void* dbias) = 0;
  // Per-row column blocks of [rows, blocks*width] (block b: expert b's rank slice):
  //   ScaleColumnBlocks: out[n, b*w+j] = alpha * s[n, b] * x[n, b*w+j]  (out may be x;
  //                      with width 1 it is the element-wise product)
  //   ColumnBlockDots:   out[n, b] = alpha * sum_j x[n, b*w+j] * y[n, b*w+j]
  virtual void ScaleColumnBlocks(DType dt, const void* x, const void* s, int64_t rows,
                                 int64_t blocks, int64_t width, double alpha, void* out) = 0;
  virtual void ColumnBlockDots(DType dt, const void* x, const void* y, int64_t rows,
                               int64_t blocks, int64_t width, double alpha, void* out) = 0;
  // The PMoL experts' stacked projections with the router's gates fused in (one op where
  // a GEMM and ScaleColumnBlocks / ColumnBlockDots would round the products in between).
  // cols = blocks * width (block b: expert b's rank slice); g [rows, blocks] are the
  // gates (null: a plain LoRA, g = 1); every operand is of dt and packed, except dg:
  //   ExpertsDown:       x [rows, k], a [cols, k]; the products p = x a^T in AccumDType(dt);
  //                      h = p (not written when h is null),
  //                      hs[n, b*w+j] = (alpha * g[n, b]) * p[n, b*w+j]
  //   ExpertsUpBackward: dy [rows, d], b [d, cols], h the forward's h (read only with g);
  //                      the products q = dy b in AccumDType(dt);
  //                      dg[n, b] = alpha * sum_j q[n, b*w+j] * h[n, b*w+j] (AccumDType(dt);
  //                        j in order; not written without g),
  //                      dh[n, b*w+j] = (alpha * g[n, b]) * q[n, b*w+j]
  // Each output is rounded once from the AccumDType products (bf16: p and q are never
  // rounded to bf16 on the way).
  virtual void ExpertsDown(DType dt, const void* x, const void* a, const void* g, int64_t rows,
                           int64_t k, int64_t blocks, int64_t width, double alpha, void* h,
                           void* hs) = 0;
  virtual void ExpertsUpBackward(DType dt, const void* dy, const void* b, const void* h,
                                 const void* g, int64_t rows, int64_t d, int64_t blocks,
                                 int64_t width, double alpha, void* dg, void* dh) = 0;
  // Row gather/scatter between two row-major matrices (the packing of routed rows for
  // expert parallelism), for i < n, j < width, with s_i = src_rows ? src_rows[i] : i and
  // d_i = dst_rows ? dst_rows[i] : i (row index arrays: I32 on this device, may be null):
  //   dst[d_i * dst_stride + j] = src[s_i * src_stride + j]        (accumulate false)
  //   dst[d_i * dst_stride + j] += src[s_i * src_stride + j]       (accumulate true)
  // Columns other than a matrix's first are reached by offsetting the pointer. The d_i
  // must be distinct, and src and dst must not overlap.
  virtual void CopyRows(DType dt, const void* src, int64_t src_stride, const int32_t* src_rows,
                        void* dst, int64_t dst_stride, const int32_t* dst_rows, int64_t n,
                        int64_t width, bool accumulate) = 0;
  // Converts n elements between any two floating types.
  virtual void Convert(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) = 0;

  // A and B of dt, C of dt.
  void Gemm(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
            double alpha, const void* a, int64_t lda, const void* b, int64_t ldb, double beta,
            void* c, int64_t ldc) {
    GemmTo(dt, dt, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  // A and B of dt, C of c_dt: dt or AccumDType(dt). The products accumulate in
  // AccumDType(dt); beta * C is added in that type before C is written (once rounded).
  virtual void GemmTo(DType dt, DType c_dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                      int64_t k, double alpha, const void* a, int64_t lda, const void* b,
                      int64_t ldb, double beta, void* c, int64_t ldc) = 0;
  // A linear layer's forward with its bias: C[m,n] = op(A) op(B) + bias, bias[n] added to
  // every row, all of dt, C packed (row stride n). The bias is added to the AccumDType(dt)
  // products before C is written (bf16: once rounded, not rounded again by an AddBias).
  virtual void GemmBias(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                        const void* a, int64_t lda, const void* b, int64_t ldb,
                        const void* bias, void* c) = 0;

  // out[i, :] = table[ids[i], :]; ids must be in range (checked by the caller).
  virtual void EmbeddingForward(DType dt, const void* table, const int32_t* ids, int64_t n,
                                int64_t dim, void* out) = 0;
  // dtable[ids[i], :] += dout[i, :]; dout of dt, dtable of table_dt: dt (an activation
  // gradient) or AccumDType(dt) (the embedding's weight gradient); the additions are in
  // AccumDType(dt), and a bf16 dtable element is rounded once.
  virtual void EmbeddingBackward(DType dt, DType table_dt, const void* dout, const int32_t* ids,
                                 int64_t n, int64_t dim, void* dtable) = 0;

  // RMSNorm of the rows of s [rows, dim]: y = s * r * w, inv_rms [rows] = r (inv_rms may
  // be null when no backward follows). Without a residual (null), s = x and sum_out is
  // unused (may be null). With one, s = x + residual is computed in AccumDType(dt),
  // rounded once to dt and written to sum_out, and the norm reads that stored s: sum_out,
  // y and inv_rms are bit for bit those of Axpy(dt, 1, residual, x) followed by the op
  // without a residual, in one pass. sum_out may be x; it must not overlap residual or y.
  virtual void RmsNormForward(DType dt, const void* x, const void* residual, const void* w,
                              double eps, int64_t rows, int64_t dim, void* sum_out, void* y,
                              void* inv_rms) = 0;
  // x is the forward's s. dx is overwritten with the norm's input gradient, plus
  // residual_grad [rows, dim] when it is not null, added in AccumDType(dt) before dx is
  // rounded once to dt; dx may be residual_grad. For f32 and f64 that is the same two
  // roundings as the unfused Backward + Axpy (the norm's gradient is rounded to dt either
  // way); for bf16 it is one rounding where the unfused pair rounds twice, so the result
  // may differ from the unfused one by a bf16 ulp. dw (nullable, of AccumDType(dt): a
  // parameter gradient) is accumulated into.
  virtual void RmsNormBackward(DType dt, const void* x, const void* w, const void* inv_rms,
                               const void* dy, const void* residual_grad, int64_t rows,
                               int64_t dim, void* dx, void* dw) = 0;

  // In place on x [tokens, heads, head_dim]; positions [tokens]; cos/sin [*, head_dim/2].
  virtual void ApplyRope(DType dt, void* x, int64_t tokens, int64_t heads, int64_t head_dim,
                         const void* cos, const void* sin, const int32_t* positions,
                         bool inverse) = 0;

  virtual void SwiGluForward(DType dt, const void* gate, const void* up, void* out,
                             int64_t n) = 0;
  // dgate, dup are overwritten.
  virtual void SwiGluBackward(DType dt, const void* gate, const void* up, const void* dout,
                              void* dgate, void* dup, int64_t n) = 0;

  virtual void AttentionForward(DType dt, const AttentionShape& shape, const void* q,
                                const void* k, const void* v, void* out, void* lse) = 0;
  // dq, dk, dv are overwritten.
  virtual void AttentionBackward(DType dt, const AttentionShape& shape, const void* q,
                                 const void* k, const void* v, const void* out,
                                 const void* lse, const void* dout, void* dq, void* dk,
                                 void* dv) = 0;

  // logp, lse: [rows] of dt.
  virtual void LogSoftmaxGather(DType dt, const void* logits, const int32_t* targets,
                                int64_t rows, int64_t vocab, void* logp, void* lse) = 0;
  // dlogits is overwritten.
  virtual void LogSoftmaxGatherBackward(DType dt, const void* logits, const int32_t* targets,
                                        const void* lse, const void* dlogp, int64_t rows,
                                        int64_t vocab, void* dlogits) = 0;
  // x, y, dy, dx: [rows, cols] of dt; y and dx are overwritten (y may be x, dx may be dy).
  virtual void RowSoftmax(DType dt, const void* x, int64_t rows, int64_t cols, double scale,
                          void* y) = 0;
  virtual void RowSoftmaxBackward(DType dt, const void* y, const void* dy, int64_t rows,
                                  int64_t cols, double scale, void* dx) = 0;
  // probs, selected, dg: [rows, slots]; gates, dgates: [rows, experts]; top: [rows]; all dt.
  virtual void RouterTopK(DType dt, const void* probs, int64_t rows, int64_t slots,
                          int64_t experts, int64_t k, int64_t capacity, void* selected,
                          void* gates, void* top) = 0;
  virtual void RouterTopKBackward(DType dt, const void* selected, const void* gates,
                                  const void* top, const void* dgates, int64_t rows,
                                  int64_t slots, int64_t experts, void* dg) = 0;
  // Router losses; slots: experts (expert e in group expert_group[e], int32 [experts] on
  // this device, non-decreasing from 0 to groups-1) then empty slots.
  // RouterGroupLoss: probs, dprobs [rows, slots], ce [rows], all dt; labels int32 [rows].
  //   Row r with labels[r] in [0, groups): ce[r] = its group soft cross-entropy (label
  //   smoothing eps) and dprobs[r,:] = grad_scale * dce/dprobs; a row with a negative label:
  //   ce 0 and dprobs 0. Both overwritten; dprobs may be null (no gradient).
  virtual void RouterGroupLoss(DType dt, const void* probs, const int32_t* labels,
                               const int32_t* expert_group, int64_t rows, int64_t slots,
                               int64_t experts, int64_t groups, double label_smoothing,
                               double grad_scale, void* ce, void* dprobs) = 0;
  // RouterBalanceLoss: for each of `count` routers c, its weighted slot mass is
  //   mass[c * mass_stride + s] (s < slots); loss[c] = its balance loss and
  //   dmass[c * slots + s] = dloss/dmass (0 for empty slots); both overwritten, all dt.
  virtual void RouterBalanceLoss(DType dt, const void* mass, int64_t mass_stride,
                                 const int32_t* expert_group, int64_t count, int64_t slots,
                                 int64_t experts, int64_t groups, void* loss,
                                 void* dmass) = 0;

  // Optimizer ops.
  // AdamWStep: one AdamW update (torch.optim.AdamW: decoupled weight decay, bias
  // correction) in place on n elements of p, m, v with gradient g, all of type dt; with
  // the scalars s (bc1 = s.bias_correction1 = 1 - beta1^t, bc2 = 1 - beta2^t):
  //   p <- p * (1 - lr*wd)
  //   m <- beta1 m + (1 - beta1) g
  //   v <- beta2 v + (1 - beta2) g^2
  //   p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
  // i.e. p - lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / bc1, v_hat = v / bc2, in
  // torch's order of operations (scalars lr/bc1, sqrt(bc2) and 1 - lr*wd formed in double).
  virtual void AdamWStep(DType dt, const AdamWScalars& s, void* p, const void* g, void* m,
                         void* v, int64_t n) = 0;
  // SumSquares: *acc += sum_i x[i]^2, where acc points to one F64 on this device; the
  // squares and the sum are in f64, in a fixed order that depends only on n
  // (deterministic, whatever the thread count or GPU).
  virtual void SumSquares(DType dt, const void* x, int64_t n, void* acc) = 0;
};

// The process-wide backend of a device, created on first use. `threads` applies to the
// CPU backend (0 = all cores) and is ignored by CUDA. A CUDA request fails with a clear
// message when this build has no CUDA support or the machine has no usable GPU.
absl::StatusOr<Backend*> GetBackend(DeviceType device, int threads = 0);

// "cpu" or "cuda".
absl::StatusOr<DeviceType> ParseDevice(const std::string& name);

}  // namespace pmol

#endif  // PMOL_KERNELS_BACKEND_H_
