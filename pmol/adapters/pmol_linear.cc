// PMoL linear forward/backward with stacked expert GEMMs; see pmol_linear.h.
#include "pmol/adapters/pmol_linear.h"

#include <vector>

#include "kernels/check.h"

namespace pmol {

void AdapterGemm(const Tensor& a, bool ta, const Tensor& b, bool tb, double beta, Tensor& c) {
  const int64_t m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const int64_t n = tb ? b.dim(0) : b.dim(1);
  PMOL_CHECK((tb ? b.dim(1) : b.dim(0)) == k && c.dim(0) == m && c.dim(1) == n);
  PMOL_CHECK(b.dtype() == a.dtype());
  a.backend()->GemmTo(a.dtype(), c.dtype(), ta, tb, m, n, k, 1.0, a.data(), a.dim(1), b.data(),
                      b.dim(1), beta, c.data(), n);
}

const Tensor& PmolDropoutInput(const PmolLinearSpec& spec, const Tensor& x, const Tensor& keep,
                               PmolLinearCache* cache) {
  if (!keep.defined()) return x;
  cache->keep = keep;
  cache->x_drop = Tensor::Empty(x.shape(), x.dtype(), x.backend());
  x.backend()->ScaleColumnBlocks(x.dtype(), x.data(), keep.data(), x.dim(0), x.dim(1), 1,
                                 spec.dropout_scale, cache->x_drop.data());
  return cache->x_drop;
}

void PmolRouterForward(const PmolLinearSpec& spec, const PmolLinearParams& p, const Tensor& x,
                       PmolLinearCache* cache) {
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const int64_t n = x.dim(0), slots = spec.layout.num_slots();
  Tensor z = Tensor::Empty({n, slots}, AccumDType(dt), be);
  AdapterGemm(x, false, p.router, true, 0.0, z);
  RouterForward(spec.layout, spec.temperature, spec.top_k, spec.capacity_factor, z.ToDoubles(), n,
                &cache->router);
  cache->gates = Tensor::FromHost(cache->router.gates.data(), {n, spec.layout.num_experts()},
                                  DType::kF64, be)
                     .ConvertTo(dt);
  cache->probs = Tensor::FromHost(cache->router.probs.data(), {n, slots}, DType::kF64, be);
}

namespace {

// The tensor in f64: itself when it is f64 already (shared, not copied).
Tensor AsF64(const Tensor& t) { return t.dtype() == DType::kF64 ? t : t.ConvertTo(DType::kF64); }

void PmolDeviceRouterForward(const PmolLinearSpec& spec, const PmolLinearParams& p,
                             const Tensor& x, PmolLinearCache* cache) {
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const int64_t n = x.dim(0), slots = spec.layout.num_slots(), experts = spec.layout.num_experts();
  Tensor z = Tensor::Empty({n, slots}, AccumDType(dt), be);
  AdapterGemm(x, false, p.router, true, 0.0, z);
  cache->probs = z.dtype() == DType::kF64 ? z : z.ConvertTo(DType::kF64);  // softmax in place
  be->RowSoftmax(DType::kF64, cache->probs.data(), n, slots, 1.0 / spec.temperature,
                 cache->probs.data());
  Tensor gates = Tensor::Empty({n, experts}, DType::kF64, be);
  if (spec.top_k <= 0 || spec.top_k >= slots) {  // dense: the expert columns
    be->CopyRows(DType::kF64, cache->probs.data(), slots, nullptr, gates.data(), experts, nullptr,
                 n, experts, false);
  } else {
    const int64_t capacity = ExpertCapacity(spec.capacity_factor, n, spec.top_k, slots);
    cache->route_selected = Tensor::Empty({n, slots}, DType::kF64, be);
    cache->route_top = Tensor::Empty({n}, DType::kF64, be);
    be->RouterTopK(DType::kF64, cache->probs.data(), n, slots, experts, spec.top_k, capacity,
                   cache->route_selected.data(), gates.data(), cache->route_top.data());
    cache->route_gates = gates;
  }
  cache->gates = dt == DType::kF64 ? gates : gates.ConvertTo(dt);
  cache->router_on_device = true;
}

void PmolDeviceRouterBackward(const PmolLinearSpec& spec, const PmolLinearParams& p,
                              const Tensor& x, const PmolLinearCache& cache, const Tensor& dgates,
                              const Tensor& dprobs_aux, Tensor& dx, PmolLinearParams* grads) {
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const int64_t n = x.dim(0), slots = spec.layout.num_slots(), experts = spec.layout.num_experts();
  // In f64: dg = dprobs_aux + the gates' part (dense: [dgates | 0 for the empty slots];
  // top-k: through the renormalisation), then dz = softmax backward in place.
  Tensor dz = dprobs_aux.defined() ? dprobs_aux.ConvertTo(DType::kF64)
                                   : Tensor::Zeros({n, slots}, DType::kF64, be);
  PMOL_CHECK(dz.numel() == n * slots);
  const Tensor dgates64 = AsF64(dgates);
  if (cache.route_selected.defined()) {
    be->RouterTopKBackward(DType::kF64, cache.route_selected.data(), cache.route_gates.data(),
                           cache.route_top.data(), dgates64.data(), n, slots, experts, dz.data());
  } else {
    be->CopyRows(DType::kF64, dgates64.data(), experts, nullptr, dz.data(), slots, nullptr, n,
                 experts, true);
  }
  be->RowSoftmaxBackward(DType::kF64, cache.probs.data(), dz.data(), n, slots,
                         1.0 / spec.temperature, dz.data());
  dz = dz.Reshape({n, slots});
  if (dt != DType::kF64) dz = dz.ConvertTo(dt);
  AdapterGemm(dz, true, x, false, 1.0, grads->router);    // dW_r += dz^T x
  AdapterGemm(dz, false, p.router, false, 1.0, dx);       // dx += dz W_r
}

}  // namespace

void PmolRouterBackward(const PmolLinearSpec& spec, const PmolLinearParams& p, const Tensor& x,
                        const PmolLinearCache& cache, const std::vector<double>& dgates,
                        const Tensor& dprobs_aux, Tensor& dx, PmolLinearParams* grads) {
  std::vector<double> dprobs;
  if (dprobs_aux.defined()) dprobs = dprobs_aux.ToDoubles();
  const std::vector<double> dz_host =
      RouterBackward(spec.layout, spec.temperature, cache.router, dgates, dprobs);
  const Tensor dz = Tensor::FromHost(dz_host.data(), {x.dim(0), spec.layout.num_slots()}, DType::kF64,
                                     x.backend())
                        .ConvertTo(x.dtype());
  AdapterGemm(dz, true, x, false, 1.0, grads->router);    // dW_r += dz^T x
  AdapterGemm(dz, false, p.router, false, 1.0, dx);       // dx += dz W_r
}

int64_t PmolDroppedCount(const PmolLinearCache& cache) {
  if (!cache.router_on_device) return cache.router.dropped_count;
  if (!cache.route_selected.defined()) return 0;  // dense: nothing is dropped
  int64_t dropped = 0;
  for (double s : cache.route_selected.ToDoubles()) dropped += s < 0;
  return dropped;
}

void PmolLinearForward(const PmolLinearSpec& spec, const PmolLinearParams& p, const Tensor& x,
                       const Tensor& keep, Tensor& y, PmolLinearCache* cache) {
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const int64_t n = x.dim(0), experts = spec.layout.num_experts(), r = spec.layout.rank;
  PMOL_CHECK(x.dim(1) == spec.d_in && y.dim(1) == spec.d_out);
  PMOL_CHECK(p.lora_A.dtype() == dt && p.lora_B.dtype() == dt);
  cache->Clear();
  const Tensor& xe = PmolDropoutInput(spec, x, keep, cache);
  // The gates first, then h and hs = h * gk * alpha/r in one op (products rounded once).
  if (spec.has_router) {
    PmolDeviceRouterForward(spec, p, x, cache);
    cache->h = Tensor::Empty({n, experts * r}, dt, be);  // dgk reads it
  }
  cache->hs = Tensor::Empty({n, experts * r}, dt, be);
  be->ExpertsDown(dt, xe.data(), p.lora_A.data(),
                  spec.has_router ? cache->gates.data() : nullptr, n, spec.d_in, experts, r,
                  spec.scaling, spec.has_router ? cache->h.data() : nullptr, cache->hs.data());
  AdapterGemm(cache->hs, false, p.lora_B, true, 1.0, y);
}

void PmolLinearBackward(const PmolLinearSpec& spec, const PmolLinearParams& p, const Tensor& x,
                        const PmolLinearCache& cache, const Tensor& dy,
                        const Tensor& dprobs_aux, Tensor& dx, PmolLinearParams* grads) {
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const int64_t n = x.dim(0), experts = spec.layout.num_experts(), r = spec.layout.rank;
  PMOL_CHECK(dy.dim(0) == n && dy.dim(1) == spec.d_out);

  AdapterGemm(dy, true, cache.hs, false, 1.0, grads->lora_B);  // dB += dy^T hs
  // dh = (dy B) scaled by gk alpha/r and dgk from the same products, in one op.
  Tensor dgates;
  if (spec.has_router) dgates = Tensor::Empty({n, experts}, AccumDType(dt), be);
  Tensor dh = Tensor::Empty({n, experts * r}, dt, be);
  be->ExpertsUpBackward(dt, dy.data(), p.lora_B.data(),
                        spec.has_router ? cache.h.data() : nullptr,
                        spec.has_router ? cache.gates.data() : nullptr, n, spec.d_out, experts,
                        r, spec.scaling, spec.has_router ? dgates.data() : nullptr, dh.data());

  const Tensor& xe = cache.keep.defined() ? cache.x_drop : x;
  AdapterGemm(dh, true, xe, false, 1.0, grads->lora_A);   // dA += dh^T x_d
  if (cache.keep.defined()) {
    Tensor dxe = Tensor::Empty(x.shape(), dt, be);
    AdapterGemm(dh, false, p.lora_A, false, 0.0, dxe);
    be->ScaleColumnBlocks(dt, dxe.data(), cache.keep.data(), n, spec.d_in, 1, spec.dropout_scale,
                          dxe.data());
    be->Axpy(dt, 1.0, dxe.data(), dx.data(), dx.numel());
  } else {
    AdapterGemm(dh, false, p.lora_A, false, 1.0, dx);     // dx += dh A
  }

  if (!spec.has_router) return;
  PMOL_CHECK(cache.router_on_device);  // PmolLinearForward's cache
  PmolDeviceRouterBackward(spec, p, x, cache, dgates, dprobs_aux, dx, grads);
}

}  // namespace pmol
