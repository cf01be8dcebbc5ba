// Llama decoder block forward/backward; see decoder_block.h for the math.
#include "pmol/model/decoder_block.h"

#include <cmath>

#include "pmol/model/linear.h"

namespace pmol {
namespace {

AttentionShape ShapeOf(const LlamaConfig& c, const BlockInput& in) {
  AttentionShape s;
  s.batch = in.batch;
  s.seq = in.seq;
  s.q_heads = c.num_attention_heads;
  s.kv_heads = c.num_key_value_heads;
  s.head_dim = c.head_dim;
  s.scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  s.key_holes = in.key_holes != nullptr ? in.key_holes->data_as<int32_t>() : nullptr;
  return s;
}

// Returns RMSNorm(x); with a residual, first x += residual (in the same pass), so that
// x holds the sum the norm read.
Tensor RmsNorm(Tensor& x, const Tensor* residual, const Tensor& w, double eps, Tensor* inv_rms) {
  const int64_t n = x.dim(0), h = x.dim(1);
  *inv_rms = Tensor::Empty({n}, AccumDType(x.dtype()), x.backend());
  Tensor y = Tensor::Empty({n, h}, x.dtype(), x.backend());
  x.backend()->RmsNormForward(x.dtype(), x.data(), residual ? residual->data() : nullptr,
                              w.data(), eps, n, h, residual ? x.data() : nullptr, y.data(),
                              inv_rms->data());
  return y;
}

void Rope(Tensor& x, int64_t heads, const LlamaConfig& c, const BlockInput& in, bool inverse) {
  x.backend()->ApplyRope(x.dtype(), x.data(), x.dim(0), heads, c.head_dim, in.rope->cos.data(),
                         in.rope->sin.data(), in.positions->data_as<int32_t>(), inverse);
}

// The frozen linear plus the module's adapter when there is one.
Tensor Linear(const BlockInput& in, LinearModule m, const Tensor& x, const LinearWeights& w) {
  Tensor y = LinearForward(x, w);
  if (in.adapters != nullptr && in.adapters->Adapts(in.layer, m))
    in.adapters->Forward(in.layer, m, x, y);
  return y;
}

void LinearGrad(const BlockInput& in, LinearModule m, const Tensor& x, const Tensor& dy,
                const LinearWeights& w, Tensor& dx, bool accumulate, LinearWeights* grads) {
  LinearBackward(x, dy, w, dx, accumulate, grads);
  if (in.adapters != nullptr && in.adapters->Adapts(in.layer, m))
    in.adapters->Backward(in.layer, m, x, dy, dx);
}

}  // namespace

void BlockActivations::ReleaseAllButInput() {
  Tensor keep = x;
  *this = BlockActivations();
  x = std::move(keep);
}

Tensor DecoderBlockForward(const LlamaConfig& c, const LayerWeights& w, const BlockInput& in,
                           BlockActivations* a, const Tensor* residual, Tensor* skip) {
  const Tensor& x = a->x;
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const int64_t n = x.dim(0), h = x.dim(1);

  a->h1 = RmsNorm(a->x, residual, w.input_norm, c.rms_norm_eps, &a->inv_rms1);  // x += residual
  a->q = Linear(in, LinearModule::kQ, a->h1, w.q);
  a->k = Linear(in, LinearModule::kK, a->h1, w.k);
  a->v = Linear(in, LinearModule::kV, a->h1, w.v);
  Rope(a->q, c.num_attention_heads, c, in, false);
  Rope(a->k, c.num_key_value_heads, c, in, false);
  const AttentionShape shape = ShapeOf(c, in);
  a->attn = Tensor::Empty({n, c.q_dim()}, dt, be);
  a->lse = Tensor::Empty({in.batch, c.num_attention_heads, in.seq}, AccumDType(dt), be);
  be->AttentionForward(dt, shape, a->q.data(), a->k.data(), a->v.data(), a->attn.data(),
                       a->lse.data());
  a->x2 = Linear(in, LinearModule::kO, a->attn, w.o);
  a->h2 = RmsNorm(a->x2, &x, w.post_norm, c.rms_norm_eps, &a->inv_rms2);  // x2 += x
  a->gate = Linear(in, LinearModule::kGate, a->h2, w.gate);
  a->up = Linear(in, LinearModule::kUp, a->h2, w.up);
  a->act = Tensor::Empty(a->gate.shape(), dt, be);
  be->SwiGluForward(dt, a->gate.data(), a->up.data(), a->act.data(), a->gate.numel());
  Tensor y = Linear(in, LinearModule::kDown, a->act, w.down);
  if (skip != nullptr) {
    *skip = a->x2;  // y = m + x2, summed by the caller's next norm
    return y;
  }
  be->Axpy(dt, 1.0, a->x2.data(), y.data(), n * h);
  return y;
}

Tensor DecoderBlockBackward(const LlamaConfig& c, const LayerWeights& w, const BlockInput& in,
                            const BlockActivations& a, const Tensor& dy, LayerWeights* g) {
  Backend* be = dy.backend();
  const DType dt = dy.dtype();
  const int64_t n = a.x.dim(0), h = a.x.dim(1);

  // MLP: y = x2 + down(swiglu(gate(h2), up(h2))).
  Tensor dact = Tensor::Empty(a.act.shape(), dt, be);
  LinearGrad(in, LinearModule::kDown, a.act, dy, w.down, dact, false, g ? &g->down : nullptr);
  Tensor dgate = Tensor::Empty(a.gate.shape(), dt, be);
  Tensor dup = Tensor::Empty(a.up.shape(), dt, be);
  be->SwiGluBackward(dt, a.gate.data(), a.up.data(), dact.data(), dgate.data(), dup.data(),
                     a.gate.numel());
  dact = Tensor();
  Tensor dh2 = Tensor::Empty(a.h2.shape(), dt, be);
  LinearGrad(in, LinearModule::kGate, a.h2, dgate, w.gate, dh2, false, g ? &g->gate : nullptr);
  LinearGrad(in, LinearModule::kUp, a.h2, dup, w.up, dh2, true, g ? &g->up : nullptr);
  dgate = Tensor();
  dup = Tensor();
  // dx2 = RMSNorm-backward(dh2) + dy (the skip path), in one pass.
  Tensor dx2 = Tensor::Empty(dy.shape(), dt, be);
  be->RmsNormBackward(dt, a.x2.data(), w.post_norm.data(), a.inv_rms2.data(), dh2.data(),
                      dy.data(), n, h, dx2.data(), g ? g->post_norm.data() : nullptr);
  dh2 = Tensor();

  // Attention: x2 = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1))).
  Tensor dattn = Tensor::Empty(a.attn.shape(), dt, be);
  LinearGrad(in, LinearModule::kO, a.attn, dx2, w.o, dattn, false, g ? &g->o : nullptr);
  Tensor dq = Tensor::Empty(a.q.shape(), dt, be);
  Tensor dk = Tensor::Empty(a.k.shape(), dt, be);
  Tensor dv = Tensor::Empty(a.v.shape(), dt, be);
  be->AttentionBackward(dt, ShapeOf(c, in), a.q.data(), a.k.data(), a.v.data(), a.attn.data(),
                        a.lse.data(), dattn.data(), dq.data(), dk.data(), dv.data());
  dattn = Tensor();
  Rope(dq, c.num_attention_heads, c, in, true);
  Rope(dk, c.num_key_value_heads, c, in, true);
  Tensor dh1 = Tensor::Empty(a.h1.shape(), dt, be);
  LinearGrad(in, LinearModule::kQ, a.h1, dq, w.q, dh1, false, g ? &g->q : nullptr);
  LinearGrad(in, LinearModule::kK, a.h1, dk, w.k, dh1, true, g ? &g->k : nullptr);
  LinearGrad(in, LinearModule::kV, a.h1, dv, w.v, dh1, true, g ? &g->v : nullptr);
  // dx = RMSNorm-backward(dh1) + dx2 (the skip path), written over dx2.
  be->RmsNormBackward(dt, a.x.data(), w.input_norm.data(), a.inv_rms1.data(), dh1.data(),
                      dx2.data(), n, h, dx2.data(), g ? g->input_norm.data() : nullptr);
  return dx2;
}

}  // namespace pmol
