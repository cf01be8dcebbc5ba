// See sequence_logprobs.h.
#include "pmol/objectives/sequence_logprobs.h"

#include "pmol/objectives/host_transfer.h"

namespace pmol {

std::vector<double> SequenceLogProbsResult::Means() const {
  std::vector<double> means(sums.size(), 0.0);
  for (size_t s = 0; s < sums.size(); ++s)
    if (counts[s] > 0) means[s] = sums[s] / static_cast<double>(counts[s]);
  return means;
}

SequenceLogProbsResult SequenceLogProbs(const Tensor& logits, const std::vector<int32_t>& targets) {
  PMOL_CHECK(logits.rank() == 3);
  const int64_t rows = logits.dim(0), seq = logits.dim(1);
  std::vector<int32_t> sequence_of(rows * seq);
  for (int64_t i = 0; i < rows * seq; ++i) sequence_of[i] = static_cast<int32_t>(i / seq);
  return SequenceLogProbs(logits, targets, sequence_of, rows);
}

std::vector<int32_t> CountedTargets(const std::vector<int32_t>& targets,
                                    const std::vector<int32_t>& sequence_of,
                                    int64_t num_sequences, int64_t vocab) {
  const size_t n = targets.size();
  PMOL_CHECK(sequence_of.size() == n);
  std::vector<int32_t> counted(n);
  for (size_t i = 0; i < n; ++i) {
    PMOL_CHECK(targets[i] < vocab);
    PMOL_CHECK(sequence_of[i] < num_sequences);
    counted[i] = sequence_of[i] < 0 ? -1 : targets[i];
  }
  return counted;
}

SequenceLogProbsResult SumSequenceLogProbs(const Tensor& logp,
                                           const std::vector<int32_t>& counted_targets,
                                           const std::vector<int32_t>& sequence_of,
                                           int64_t num_sequences) {
  const int64_t n = logp.numel();
  PMOL_CHECK(static_cast<int64_t>(counted_targets.size()) == n);
  PMOL_CHECK(static_cast<int64_t>(sequence_of.size()) == n);
  SequenceLogProbsResult result;
  SequenceLogProbsState& st = result.state;
  st.rows = 1;
  st.seq = n;
  st.dtype = logp.dtype();
  st.sequence_of = sequence_of;
  st.num_sequences = num_sequences;
  const std::vector<double> lp = logp.ToDoubles();
  result.sums.assign(num_sequences, 0.0);
  result.counts.assign(num_sequences, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (counted_targets[i] < 0) continue;
    result.sums[sequence_of[i]] += lp[i];
    ++result.counts[sequence_of[i]];
  }
  return result;
}

SequenceLogProbsResult SequenceLogProbs(const Tensor& logits, const std::vector<int32_t>& targets,
                                        const std::vector<int32_t>& sequence_of,
                                        int64_t num_sequences) {
  PMOL_CHECK(logits.rank() == 3);
  PMOL_CHECK(logits.dtype() == DType::kF32 || logits.dtype() == DType::kF64);
  const int64_t rows = logits.dim(0), seq = logits.dim(1), vocab = logits.dim(2);
  const int64_t n = rows * seq;
  PMOL_CHECK(static_cast<int64_t>(targets.size()) == n);
  const std::vector<int32_t> counted = CountedTargets(targets, sequence_of, num_sequences, vocab);
  Backend* backend = logits.backend();
  Tensor targets_t = Tensor::FromHost(counted.data(), {n}, DType::kI32, backend);
  Tensor lse = Tensor::Empty({n}, logits.dtype(), backend);
  Tensor logp = Tensor::Empty({n}, logits.dtype(), backend);
  if (n > 0) {
    backend->LogSoftmaxGather(logits.dtype(), logits.data(), targets_t.data_as<int32_t>(), n,
                              vocab, logp.data(), lse.data());
  }
  SequenceLogProbsResult result = SumSequenceLogProbs(logp, counted, sequence_of, num_sequences);
  SequenceLogProbsState& st = result.state;
  st.rows = rows;
  st.seq = seq;
  st.vocab = vocab;
  st.targets = std::move(targets_t);
  st.lse = std::move(lse);
  return result;
}

Tensor PositionLogProbGrads(const SequenceLogProbsState& state, const std::vector<double>& d_sums,
                            Backend* backend, DType dtype) {
  PMOL_CHECK(static_cast<int64_t>(d_sums.size()) == state.num_sequences);
  const int64_t n = static_cast<int64_t>(state.sequence_of.size());
  std::vector<double> dlogp(n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    if (state.sequence_of[i] >= 0) dlogp[i] = d_sums[state.sequence_of[i]];
  return objectives_internal::TensorFromDoubles(dlogp, {n}, dtype, backend);
}

void SequenceLogProbsBackward(const Tensor& logits, const SequenceLogProbsState& state,
                              const std::vector<double>& d_sums, Tensor* dlogits) {
  PMOL_CHECK(dlogits != nullptr);
  PMOL_CHECK(logits.shape() == Shape({state.rows, state.seq, state.vocab}));
  PMOL_CHECK(logits.dtype() == state.dtype && state.targets.defined());
  if (!dlogits->defined()) {
    *dlogits = Tensor::Empty(logits.shape(), logits.dtype(), logits.backend());
  }
  PMOL_CHECK(dlogits->shape() == logits.shape() && dlogits->dtype() == logits.dtype());
  const int64_t n = state.rows * state.seq;
  Tensor dlogp_t = PositionLogProbGrads(state, d_sums, logits.backend(), logits.dtype());
  if (n > 0) {
    logits.backend()->LogSoftmaxGatherBackward(logits.dtype(), logits.data(),
                                               state.targets.data_as<int32_t>(), state.lse.data(),
                                               dlogp_t.data(), n, state.vocab, dlogits->data());
  }
}

std::vector<double> MeanGradToSumGrad(const std::vector<double>& d_means,
                                      const std::vector<int64_t>& counts) {
  PMOL_CHECK(d_means.size() == counts.size());
  std::vector<double> d_sums(d_means.size(), 0.0);
  for (size_t s = 0; s < d_means.size(); ++s)
    if (counts[s] > 0) d_sums[s] = d_means[s] / static_cast<double>(counts[s]);
  return d_sums;
}

std::vector<int32_t> ResponseTargets(const std::vector<int32_t>& tokens, int64_t rows,
                                     int64_t seq, const std::vector<int64_t>& response_start,
                                     const std::vector<int64_t>& length) {
  PMOL_CHECK(static_cast<int64_t>(tokens.size()) == rows * seq);
  PMOL_CHECK(static_cast<int64_t>(response_start.size()) == rows);
  PMOL_CHECK(static_cast<int64_t>(length.size()) == rows);
  std::vector<int32_t> targets(rows * seq, -1);
  for (int64_t r = 0; r < rows; ++r) {
    PMOL_CHECK(length[r] >= 0 && length[r] <= seq && response_start[r] >= 0);
    for (int64_t t = 0; t + 1 < seq; ++t) {
      if (t + 1 >= response_start[r] && t + 1 < length[r])
        targets[r * seq + t] = tokens[r * seq + t + 1];
    }
  }
  return targets;
}

}  // namespace pmol
