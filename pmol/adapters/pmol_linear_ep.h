// Expert parallelism for one PMoL linear module: the experts are spread over the ranks
// of an expert-parallel group (each rank holds the A rows / B columns of its own experts,
// in ascending global order), the router is replicated. For x [N, d_in] on rank s:
//   forward   the router runs locally (pmol_linear.h, top-k and capacity included); row
//             n goes to rank q when the router routes it to one of q's experts (dense
//             routing: to every rank). One all-to-all sends [x_d row | gates of q's
//             experts]; rank q computes, for the M rows it received from all ranks,
//               h = X A_q^T,  hs = h * G * alpha/r,  Y = hs B_q^T      (stacked GEMMs)
//             and a second all-to-all brings Y back; rank s adds every piece into y.
//   backward  dy rows go out the same way; rank q computes
//               dB_q += dY^T hs,  dhs = dY B_q,  dG = alpha/r sum_j dhs h (per expert),
//               dh = dhs * G * alpha/r,  dA_q += dh^T X,  dX = dh A_q
//             and returns [dX row | dG row] (dG in AccumDType: f32 in a bf16 run, as the
//             one-process router reads it); rank s adds dX into dx (through the dropout
//             mask) and runs the router's backward on the gathered dL/dgates.
// The result equals PmolLinearForward / Backward on the whole expert set, up to the order
// of floating-point sums. A rank's expert gradients hold the contributions of every
// token routed to it from its expert-parallel group; summing them over the
// expert-data-parallel group gives the full gradient (no 1/ep factor).
// Every rank of the group must call these in the same order (collectives inside).
#ifndef PMOL_ADAPTERS_PMOL_LINEAR_EP_H_
#define PMOL_ADAPTERS_PMOL_LINEAR_EP_H_

#include <cstdint>
#include <vector>

#include "dist/comm.h"
#include "pmol/adapters/pmol_linear.h"

namespace pmol {

struct ExpertParallelGroup {
  dist::Comm* comm = nullptr;                         // the expert-parallel ranks (not owned)
  std::vector<std::vector<int32_t>> experts_of_rank;  // global experts per rank, ascending
  const std::vector<int32_t>& local_experts() const { return experts_of_rank[comm->rank()]; }
};

// params: this rank's experts (lora_A [E_l*r, d_in], lora_B [d_out, E_l*r]) and the
// whole router.
void PmolLinearForwardEP(const PmolLinearSpec& spec, const ExpertParallelGroup& group,
                         const PmolLinearParams& params, const Tensor& x, const Tensor& keep,
                         Tensor& y, PmolLinearCache* cache);
void PmolLinearBackwardEP(const PmolLinearSpec& spec, const ExpertParallelGroup& group,
                          const PmolLinearParams& params, const Tensor& x,
                          const PmolLinearCache& cache, const Tensor& dy, const Tensor& dprobs_aux,
                          Tensor& dx, PmolLinearParams* grads);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_PMOL_LINEAR_EP_H_
