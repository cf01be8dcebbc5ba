// One PMoL-adapted linear module with parallel (stacked) expert computation. For input
// x [N, d_in] and the frozen output y0:
//   x_d = dropout(x) = x * keep / (1 - p) (keep mask 0/1; experts only, not router)
//   h   = x_d A^T                         A = A_all [E*r, d_in]: ONE GEMM for all experts
//   gk  = Router(x W_r^T)                 router.h; LoRA: no router, gk = 1
//   hs[n, e*r+j] = h[n, e*r+j] * gk[n, e] * alpha/r
//   y   = y0 + hs B^T                     B = B_all [d_out, E*r]: ONE GEMM for all experts
// Backward mirrors it with the same two stacked GEMMs per direction:
//   dhs = dy B;  dB += dy^T hs;  dgk[n,e] = alpha/r sum_j dhs[n,e*r+j] h[n,e*r+j]
//   dh  = dhs scaled by gk alpha/r;  dA += dh^T x_d;  dx += (dh A) * keep / (1 - p)
// The gates are fused into the stacked GEMMs: h and hs come out of one op
// (Backend::ExpertsDown, after the router), dgk and dh out of one op on dhs
// (Backend::ExpertsUpBackward), so that in bf16 the products are rounded once and dhs is
// never stored; hs is kept for dB.
//   dz  = RouterBackward(dgk, dprobs_aux);  dW_r += dz^T x;  dx += dz W_r
// dprobs_aux is the auxiliary losses' gradient on the dense router probabilities.
// The router runs on the device and never waits for the host: probs =
// Backend::RowSoftmax(z, 1/tau); gk = its expert columns (dense, top_k 0: PMoL's default)
// or Backend::RouterTopK's renormalised selection (with its capacity limit); backward
// dg = dprobs_aux + [dgk | 0 on empty slots] (dense) or RouterTopKBackward's term, then
// dz = RowSoftmaxBackward. It computes in f64 whatever the model's dtype (z, probs, dg,
// dz: [N, S], a small matrix), as router.h does on the host, so the router's gradients
// keep the host path's precision (in f32 they drifted by up to 3e-5 relative over a few
// steps, against 1e-6 for the f64 router). The expert-parallel layer routes on the host
// (router.h), since its all-to-all needs the route there anyway.
// Mixed precision (model dtype bf16, kernels/backend.h): x, h, hs, y, A, B and W_r are
// bf16 (A, B, W_r the optimizer's rounded working copies of its f32 masters); the router
// logits z and dgk come out of their GEMM / column dots in f32, and every parameter
// gradient (dA, dB, dW_r) is accumulated in f32 (AdapterGemm writes C in C's dtype).
#ifndef PMOL_ADAPTERS_PMOL_LINEAR_H_
#define PMOL_ADAPTERS_PMOL_LINEAR_H_

#include <cstdint>

#include "pmol/adapters/expert_layout.h"
#include "pmol/adapters/router.h"
#include "pmol/core/tensor.h"

namespace pmol {

struct PmolLinearSpec {
  int64_t d_in = 0, d_out = 0;
  ExpertLayout layout;       // LoRA: one group of one expert, no empty slot
  bool has_router = true;    // false: LoRA (gk = 1)
  double scaling = 1.0;      // alpha / r
  double temperature = 1.0;
  int32_t top_k = 0;
  double capacity_factor = 0.0;  // top-k only; 0: dropless (router.h)
  // 1 / (1 - p) for dropout p: the kernels apply it in their f32/f64 math together with
  // the 0/1 keep mask (so a bf16 run does not round it to bf16).
  double dropout_scale = 1.0;
};

struct PmolLinearParams {
  Tensor lora_A;  // [E*r, d_in]
  Tensor lora_B;  // [d_out, E*r]
  Tensor router;  // [S, d_in]; undefined without a router
};

// What the backward reads, kept from the forward.
struct PmolLinearCache {
  Tensor keep;           // [N, d_in] dropout keep mask (0 or 1); undefined: no dropout
  Tensor x_drop;         // x * keep * dropout_scale; undefined: no dropout
  Tensor h;              // [N, E*r] (with a router: dgk reads it)
  Tensor hs;             // [N, E*r] the gated expert outputs (dB reads them)
  Tensor gates;          // [N, E] on the device (undefined without a router)
  bool router_on_device = false;  // device routing: `router` below is not filled
  Tensor route_selected, route_gates, route_top;  // device top-k, f64: [N, S] (1 routed,
                                                  // -1 dropped, 0), [N, E], [N]
  RouterState router;    // host routing (top-k, expert parallelism), probabilities included
  Tensor probs;          // [N, S] dense router probabilities, f64 (for the aux losses)
  // Expert parallelism (pmol_linear_ep.h); h then holds the received rows' [M, E_l*r].
  std::vector<std::vector<int64_t>> sent_rows;  // [ep]: rows of x sent to each rank
  std::vector<int64_t> received_rows;           // [ep]: rows received from each rank
  Tensor recv_x, recv_gates;                    // [M, d_in] (dropout applied), [M, E_l]
  void Clear() { *this = PmolLinearCache(); }
};

// Selected experts dropped over their capacity in the last forward (router.h), from the
// host route or the device one (which this copies to the host).
int64_t PmolDroppedCount(const PmolLinearCache& cache);

// y += adapter(x). `keep` (may be undefined) is the dropout mask for x (times
// spec.dropout_scale).
void PmolLinearForward(const PmolLinearSpec& spec, const PmolLinearParams& params,
                       const Tensor& x, const Tensor& keep, Tensor& y, PmolLinearCache* cache);

// c [m, n] = op(a) op(b) + beta * c, row-major (op: transpose when ta / tb); a and b of
// one dtype, c of that dtype or of its AccumDType (Backend::GemmTo).
void AdapterGemm(const Tensor& a, bool ta, const Tensor& b, bool tb, double beta, Tensor& c);

// The parts the expert-parallel layer (pmol_linear_ep.h) uses: x_d = dropout(x) (x
// itself without a mask; shared with the layer above), and the router on the host
// (router.h), whose route the all-to-all needs: the forward fills the cache's router,
// gates and probs; the backward from dL/dgates [N, E] (host, f64) and dprobs_aux:
// dW_r += dz^T x, dx += dz W_r.
const Tensor& PmolDropoutInput(const PmolLinearSpec& spec, const Tensor& x, const Tensor& keep,
                               PmolLinearCache* cache);
void PmolRouterForward(const PmolLinearSpec& spec, const PmolLinearParams& params, const Tensor& x,
                       PmolLinearCache* cache);
void PmolRouterBackward(const PmolLinearSpec& spec, const PmolLinearParams& params, const Tensor& x,
                        const PmolLinearCache& cache, const std::vector<double>& dgates,
                        const Tensor& dprobs_aux, Tensor& dx, PmolLinearParams* grads);

// dx += d adapter / dx; gradients accumulate into grads (same shapes as params).
// dprobs_aux: f64 [N, S] or undefined.
void PmolLinearBackward(const PmolLinearSpec& spec, const PmolLinearParams& params,
                        const Tensor& x, const PmolLinearCache& cache, const Tensor& dy,
                        const Tensor& dprobs_aux, Tensor& dx, PmolLinearParams* grads);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_PMOL_LINEAR_H_
