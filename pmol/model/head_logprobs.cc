// Chunked head log-probs and their gradient basis; see head_logprobs.h.
#include "pmol/model/head_logprobs.h"

#include <algorithm>

#include "kernels/check.h"

namespace pmol {

int64_t HeadChunkRows(const Tensor& hidden, int64_t vocab, int64_t chunk_bytes) {
  const int64_t row_bytes = std::max<int64_t>(1, vocab * DTypeSize(AccumDType(hidden.dtype())));
  if (chunk_bytes > 0) return std::max<int64_t>(1, chunk_bytes / row_bytes);
  constexpr int64_t kMinRows = 256;
  const int64_t budget = hidden.backend()->device() == DeviceType::kCuda ? int64_t{1} << 30
                                                                          : int64_t{8} << 20;
  return std::max(kMinRows, budget / row_bytes);
}

HeadLogProbs HeadLogProbsAt(const Tensor& head, const Tensor& hidden, const Tensor& positions,
                            const Tensor& targets, bool with_basis, int64_t chunk_bytes) {
  PMOL_CHECK(head.rank() == 2 && hidden.rank() >= 1 && hidden.dim(-1) == head.dim(1));
  PMOL_CHECK(head.dtype() == hidden.dtype() && head.backend() == hidden.backend());
  PMOL_CHECK(positions.dtype() == DType::kI32 && targets.dtype() == DType::kI32);
  PMOL_CHECK(positions.numel() == targets.numel());
  Backend* be = hidden.backend();
  const DType dt = hidden.dtype(), acc = AccumDType(dt);
  const int64_t m = positions.numel(), v = head.dim(0), h = head.dim(1);
  const Tensor flat_positions = positions.Reshape({m}), flat_targets = targets.Reshape({m});
  HeadLogProbs out;
  out.logp = Tensor::Empty({m}, acc, be);
  if (with_basis) out.basis = Tensor::Empty({m, h}, acc, be);
  if (m == 0) return out;

  const int64_t rows = std::min(m, HeadChunkRows(hidden, v, chunk_bytes));
  Tensor selected = Tensor::Empty({rows, h}, dt, be);
  Tensor logits = Tensor::Empty({rows, v}, acc, be);
  Tensor lse = Tensor::Empty({rows}, acc, be);
  Tensor ones, narrow_dlogits;  // the latter: onehot - softmax in dt when dt != acc
  if (with_basis) {
    ones = Tensor::Empty({rows}, acc, be);
    be->Fill(acc, ones.data(), 1.0, rows);
    if (dt != acc) narrow_dlogits = Tensor::Empty({rows, v}, dt, be);
  }
  for (int64_t i0 = 0; i0 < m; i0 += rows) {
    const int64_t c = std::min(rows, m - i0);
    const int32_t* pos = flat_positions.Rows(i0, c).data_as<int32_t>();
    const int32_t* tgt = flat_targets.Rows(i0, c).data_as<int32_t>();
    be->EmbeddingForward(dt, hidden.data(), pos, c, h, selected.data());
    be->GemmTo(dt, acc, false, true, c, v, h, 1.0, selected.data(), h, head.data(), h, 0.0,
               logits.data(), v);
    be->LogSoftmaxGather(acc, logits.data(), tgt, c, v, out.logp.Rows(i0, c).data(), lse.data());
    if (with_basis) {
      // In place: the chunk's logits become onehot(t) - softmax (dlogp = 1), then basis =
      // that times W.
      be->LogSoftmaxGatherBackward(acc, logits.data(), tgt, lse.data(), ones.data(), c, v,
                                   logits.data());
      const void* dlogits = logits.data();
      if (narrow_dlogits.defined()) {
        be->Convert(acc, logits.data(), dt, narrow_dlogits.data(), c * v);
        dlogits = narrow_dlogits.data();
      }
      be->GemmTo(dt, acc, false, false, c, h, v, 1.0, dlogits, v, head.data(), h, 0.0,
                 out.basis.Rows(i0, c).data(), h);
    }
  }
  return out;
}

Tensor HeadLogProbsBackward(const HeadLogProbs& forward, const Tensor& hidden,
                            const Tensor& positions, const Tensor& dlogp) {
  PMOL_CHECK(forward.basis.defined());
  const int64_t m = positions.numel(), h = forward.basis.dim(1);
  const int64_t n = hidden.numel() / h;
  PMOL_CHECK(forward.basis.dim(0) == m && dlogp.numel() == m);
  const DType dt = hidden.dtype(), acc = AccumDType(dt);
  PMOL_CHECK(dlogp.dtype() == acc && forward.basis.dtype() == acc && hidden.dim(-1) == h);
  Backend* be = hidden.backend();
  Tensor dselected = Tensor::Empty({m, h}, acc, be);
  if (m > 0) {
    be->ScaleColumnBlocks(acc, forward.basis.data(), dlogp.data(), m, 1, h, 1.0,
                          dselected.data());
  }
  if (acc != dt) dselected = dselected.ConvertTo(dt);
  Tensor dhidden = Tensor::Zeros({n, h}, dt, be);
  be->EmbeddingBackward(dt, dt, dselected.data(), positions.data_as<int32_t>(), m, h,
                        dhidden.data());
  return dhidden;
}

}  // namespace pmol
