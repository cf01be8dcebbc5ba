// Expert-parallel PMoL linear: all-to-all dispatch and combine; see pmol_linear_ep.h.
#include "pmol/adapters/pmol_linear_ep.h"

#include <algorithm>

#include "kernels/check.h"

namespace pmol {
namespace {

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

char* Bytes(Tensor& t) { return static_cast<char*>(t.data()); }
const char* Bytes(const Tensor& t) { return static_cast<const char*>(t.data()); }

// A 1-D buffer of at least one element (a rank may send or receive nothing).
Tensor Buffer(int64_t elements, DType dt, Backend* be) {
  return Tensor::Empty({std::max<int64_t>(elements, 1)}, dt, be);
}

// Every rank learns how many rows each rank sends it.
std::vector<int64_t> ExchangeRowCounts(dist::Comm& comm, const std::vector<std::vector<int64_t>>& rows) {
  const int ranks = comm.size();
  std::vector<int32_t> send(ranks), recv(ranks);
  for (int q = 0; q < ranks; ++q) send[q] = static_cast<int32_t>(rows[q].size());
  const std::vector<int64_t> ones(ranks, 1);
  comm.AllToAll(send.data(), ones, recv.data(), ones, DType::kI32);
  return std::vector<int64_t>(recv.begin(), recv.end());
}

// The row lists of every rank back to back, as I32 on the device (CopyRows' row maps).
Tensor RowIndices(const std::vector<std::vector<int64_t>>& rows, Backend* be) {
  std::vector<int32_t> ids;
  for (const std::vector<int64_t>& list : rows) ids.insert(ids.end(), list.begin(), list.end());
  if (ids.empty()) ids.push_back(0);  // a rank may send nothing
  return Tensor::FromHost(ids.data(), {static_cast<int64_t>(ids.size())}, DType::kI32, be);
}

// Element counts of blocks of `rows[q]` rows of `width[q]` elements.
std::vector<int64_t> Counts(const std::vector<int64_t>& rows, const std::vector<int64_t>& width) {
  std::vector<int64_t> c(rows.size());
  for (size_t q = 0; q < rows.size(); ++q) c[q] = rows[q] * width[q];
  return c;
}

std::vector<int64_t> Sizes(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> s(rows.size());
  for (size_t q = 0; q < rows.size(); ++q) s[q] = static_cast<int64_t>(rows[q].size());
  return s;
}

}  // namespace

void PmolLinearForwardEP(const PmolLinearSpec& spec, const ExpertParallelGroup& group,
                         const PmolLinearParams& p, const Tensor& x, const Tensor& keep, Tensor& y,
                         PmolLinearCache* cache) {
  PMOL_CHECK(spec.has_router && x.dim(1) == spec.d_in && y.dim(1) == spec.d_out);
  dist::Comm& comm = *group.comm;
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const size_t es = DTypeSize(dt);
  const int ranks = comm.size();
  const int64_t n = x.dim(0), d_in = spec.d_in, d_out = spec.d_out, r = spec.layout.rank;
  const int64_t experts = spec.layout.num_experts(), slots = spec.layout.num_slots();
  const std::vector<int32_t>& local = group.local_experts();
  const int64_t local_count = static_cast<int64_t>(local.size());
  PMOL_CHECK(p.lora_A.dim(0) == local_count * r && p.lora_B.dim(1) == local_count * r);
  cache->Clear();
  const Tensor& xe = PmolDropoutInput(spec, x, keep, cache);
  PmolRouterForward(spec, p, x, cache);
  const RouterState& route = cache->router;

  // Which rows each rank's experts compute, and the send buffer [x_d row | gates of q's].
  cache->sent_rows.assign(ranks, {});
  std::vector<int64_t> send_width(ranks);
  std::vector<double> gate_values;
  for (int q = 0; q < ranks; ++q) {
    const std::vector<int32_t>& theirs = group.experts_of_rank[q];
    send_width[q] = d_in + static_cast<int64_t>(theirs.size());
    for (int64_t row = 0; row < n; ++row) {
      bool routed = false;
      for (int32_t e : theirs) routed = routed || route.Routes(row, e, slots, experts);
      if (!routed) continue;
      cache->sent_rows[q].push_back(row);
      for (int32_t e : theirs) gate_values.push_back(route.gates[row * experts + e]);
    }
  }
  const std::vector<int64_t> sent = Sizes(cache->sent_rows);
  cache->received_rows = ExchangeRowCounts(comm, cache->sent_rows);
  const std::vector<int64_t> send_counts = Counts(sent, send_width);
  const std::vector<int64_t> recv_width(ranks, d_in + local_count);
  const std::vector<int64_t> recv_counts = Counts(cache->received_rows, recv_width);

  const Tensor gates = Tensor::FromHost(gate_values.data(), {static_cast<int64_t>(gate_values.size())},
                                        DType::kF64, be)
                           .ConvertTo(dt);
  const Tensor row_ids = RowIndices(cache->sent_rows, be);
  const int32_t* ids = row_ids.data_as<int32_t>();
  Tensor send = Buffer(Sum(send_counts), dt, be);
  {
    char* dst = Bytes(send);
    const char* gate_src = Bytes(gates);
    for (int q = 0; q < ranks; ++q) {  // block q: rows [x_d row | gates of q's experts]
      const int64_t k = sent[q], width = send_width[q], gate_width = width - d_in;
      be->CopyRows(dt, xe.data(), d_in, ids, dst, width, nullptr, k, d_in, false);
      be->CopyRows(dt, gate_src, gate_width, nullptr, dst + d_in * es, width, nullptr, k, gate_width, false);
      ids += k;
      dst += k * width * es;
      gate_src += k * gate_width * es;
    }
  }
  Tensor recv = Buffer(Sum(recv_counts), dt, be);
  comm.AllToAll(send.data(), send_counts, recv.data(), recv_counts, dt);
  send = Tensor();

  // This rank's experts on the M rows it received.
  const int64_t m = Sum(cache->received_rows);
  cache->recv_x = Tensor::Empty({m, d_in}, dt, be);
  cache->recv_gates = Tensor::Empty({m, local_count}, dt, be);
  be->CopyRows(dt, recv.data(), d_in + local_count, nullptr, cache->recv_x.data(), d_in, nullptr, m, d_in, false);
  be->CopyRows(dt, Bytes(recv) + d_in * es, d_in + local_count, nullptr, cache->recv_gates.data(), local_count,
               nullptr, m, local_count, false);
  recv = Tensor();
  cache->h = Tensor::Empty({m, local_count * r}, dt, be);
  cache->hs = Tensor::Empty({m, local_count * r}, dt, be);
  Tensor out = Tensor::Zeros({m, d_out}, dt, be);
  if (m > 0) {  // h = X A_q^T and hs = h * gates * alpha/r in one op; Y = hs B_q^T
    be->ExpertsDown(dt, cache->recv_x.data(), p.lora_A.data(), cache->recv_gates.data(), m, d_in,
                    local_count, r, spec.scaling, cache->h.data(), cache->hs.data());
    AdapterGemm(cache->hs, false, p.lora_B, true, 0.0, out);
  }

  // Back to the rows' ranks, added into y.
  const std::vector<int64_t> out_width(ranks, d_out);
  Tensor back = Buffer(Sum(sent) * d_out, dt, be);
  comm.AllToAll(out.data(), Counts(cache->received_rows, out_width), back.data(), Counts(sent, out_width), dt);
  const char* src = Bytes(back);
  ids = row_ids.data_as<int32_t>();
  for (int q = 0; q < ranks; ++q) {  // a row goes to a rank at most once: distinct rows per call
    be->CopyRows(dt, src, d_out, nullptr, y.data(), d_out, ids, sent[q], d_out, true);
    ids += sent[q];
    src += sent[q] * d_out * es;
  }
}

void PmolLinearBackwardEP(const PmolLinearSpec& spec, const ExpertParallelGroup& group,
                          const PmolLinearParams& p, const Tensor& x, const PmolLinearCache& cache,
                          const Tensor& dy, const Tensor& dprobs_aux, Tensor& dx,
                          PmolLinearParams* grads) {
  dist::Comm& comm = *group.comm;
  Backend* be = x.backend();
  const DType dt = x.dtype();
  const size_t es = DTypeSize(dt);
  const int ranks = comm.size();
  const int64_t n = x.dim(0), d_in = spec.d_in, d_out = spec.d_out, r = spec.layout.rank;
  const int64_t experts = spec.layout.num_experts();
  const int64_t local_count = static_cast<int64_t>(group.local_experts().size());
  const std::vector<int64_t> sent = Sizes(cache.sent_rows);
  const int64_t m = Sum(cache.received_rows);

  // dy rows to the ranks whose experts computed them.
  const std::vector<int64_t> out_width(ranks, d_out);
  const Tensor row_ids = RowIndices(cache.sent_rows, be);
  Tensor send = Buffer(Sum(sent) * d_out, dt, be);
  be->CopyRows(dt, dy.data(), d_out, row_ids.data_as<int32_t>(), send.data(), d_out, nullptr, Sum(sent), d_out,
               false);
  Tensor dout = Tensor::Empty({m, d_out}, dt, be);
  comm.AllToAll(send.data(), Counts(sent, out_width), m > 0 ? dout.data() : Buffer(1, dt, be).data(),
                Counts(cache.received_rows, out_width), dt);
  send = Tensor();

  // This rank's experts: parameter gradients, and [dX | dG] for the senders. dG travels
  // in AccumDType(dt), as the one-process router backward reads it (so a bf16 run does
  // not round the router's gradient once more): its bytes fill `accum_slots` elements of
  // dt per expert (2 in bf16).
  const DType accum_dt = AccumDType(dt);
  const int64_t accum_slots = static_cast<int64_t>(DTypeSize(accum_dt) / es);
  const int64_t ret_width = d_in + local_count * accum_slots;
  Tensor ret = Buffer(m * ret_width, dt, be);
  if (m > 0) {
    AdapterGemm(dout, true, cache.hs, false, 1.0, grads->lora_B);  // dB_q += dY^T hs
    // dhs = dY B_q, then dgates and dh = dhs * gates * alpha/r from it, in one op.
    Tensor dh = Tensor::Empty({m, local_count * r}, dt, be);
    Tensor dgates = Tensor::Empty({m, local_count}, accum_dt, be);
    be->ExpertsUpBackward(dt, dout.data(), p.lora_B.data(), cache.h.data(), cache.recv_gates.data(), m,
                          d_out, local_count, r, spec.scaling, dgates.data(), dh.data());
    AdapterGemm(dh, true, cache.recv_x, false, 1.0, grads->lora_A);  // dA_q += dh^T X
    Tensor dxr = Tensor::Empty({m, d_in}, dt, be);
    AdapterGemm(dh, false, p.lora_A, false, 0.0, dxr);  // dX = dh A_q
    be->CopyRows(dt, dxr.data(), d_in, nullptr, ret.data(), ret_width, nullptr, m, d_in, false);
    be->CopyRows(dt, dgates.data(), local_count * accum_slots, nullptr, Bytes(ret) + d_in * es, ret_width, nullptr,
                 m, local_count * accum_slots, false);
  }
  std::vector<int64_t> back_width(ranks);
  for (int q = 0; q < ranks; ++q)
    back_width[q] = d_in + static_cast<int64_t>(group.experts_of_rank[q].size()) * accum_slots;
  const std::vector<int64_t> back_counts = Counts(sent, back_width);
  Tensor back = Buffer(Sum(back_counts), dt, be);
  comm.AllToAll(ret.data(), Counts(cache.received_rows, std::vector<int64_t>(ranks, ret_width)), back.data(),
                back_counts, dt);
  ret = Tensor();

  // dx through the dropout mask, and dL/dgates for the router.
  Tensor dxe = Tensor::Zeros({n, d_in}, dt, be);
  int64_t gate_elements = 0;
  for (int q = 0; q < ranks; ++q) gate_elements += sent[q] * static_cast<int64_t>(group.experts_of_rank[q].size());
  Tensor dgate_values = Buffer(gate_elements, accum_dt, be);
  {
    const char* src = Bytes(back);
    char* gate_dst = Bytes(dgate_values);
    const int32_t* ids = row_ids.data_as<int32_t>();
    for (int q = 0; q < ranks; ++q) {  // block q: rows [dX row | dgates of q's experts]
      const int64_t k = sent[q], width = back_width[q], gate_width = width - d_in;
      be->CopyRows(dt, src, width, nullptr, dxe.data(), d_in, ids, k, d_in, true);
      be->CopyRows(dt, src + d_in * es, width, nullptr, gate_dst, gate_width, nullptr, k, gate_width, false);
      ids += k;
      src += k * width * es;
      gate_dst += k * gate_width * es;
    }
  }
  if (cache.keep.defined()) {
    be->ScaleColumnBlocks(dt, dxe.data(), cache.keep.data(), n, d_in, 1, spec.dropout_scale,
                          dxe.data());
  }
  be->Axpy(dt, 1.0, dxe.data(), dx.data(), dx.numel());
  std::vector<double> dgates(n * experts, 0.0);
  {
    const std::vector<double> values = dgate_values.ToDoubles();
    size_t at = 0;
    for (int q = 0; q < ranks; ++q) {
      for (int64_t row : cache.sent_rows[q]) {
        for (int32_t e : group.experts_of_rank[q]) dgates[row * experts + e] = values[at++];
      }
    }
  }
  PmolRouterBackward(spec, p, x, cache, dgates, dprobs_aux, dx, grads);
}

}  // namespace pmol
