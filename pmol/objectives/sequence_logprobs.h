// Sequence log-probabilities of response tokens, and their backward.
//
// Math. For logits [R, T, V] (row r = one padded sequence, position t predicts the token
// at t + 1) and targets [R*T] with targets[r*T + t] = the id of token t+1 of row r when
// that token belongs to a response, else -1:
//   logp[r, t] = logits[r, t, y] - logsumexp_v logits[r, t, v]      (0 where target < 0)
//   sum_s      = sum over positions (r, t) of sequence s of logp[r, t]
//   count_s    = number of such positions with target >= 0
//   mean_s     = sum_s / count_s          (0 when count_s == 0; IPO's length-normalised form)
// By default sequence s is row s. For packed rows (several sequences per row) the caller
// passes `sequence_of` [R*T]: the sequence index of each position, -1 = not counted.
// Backward, given dL/dsum_s: dlogits[r, t, :] = dL/dsum_{s(r,t)} * (onehot(y) - softmax),
// via Backend::LogSoftmaxGatherBackward (positions with target -1 get zero gradient).
//
// The same sums from per-position log-probs computed elsewhere (SumSequenceLogProbs,
// e.g. from pmol/model/head_logprobs.h, which never holds all the logits) and the
// per-position gradient dL/dlogp that such a caller backpropagates (PositionLogProbGrads).
//
// Precision: per-position log-probs are computed in the logits' dtype (f32 or f64, the
// backends' compute types) and summed on the host in double.
#ifndef PMOL_OBJECTIVES_SEQUENCE_LOGPROBS_H_
#define PMOL_OBJECTIVES_SEQUENCE_LOGPROBS_H_

#include <cstdint>
#include <vector>

#include "pmol/core/tensor.h"

namespace pmol {

// What the forward keeps for the backward (the logits themselves are passed again, so
// the caller decides how long they live).
struct SequenceLogProbsState {
  int64_t rows = 0, seq = 0, vocab = 0;  // SumSequenceLogProbs: 1, M, 0
  DType dtype = DType::kF32;
  Tensor targets;                      // i32 [R*T] on the logits' backend (not from Sum...)
  Tensor lse;                          // [R*T], logits' dtype (not from Sum...)
  std::vector<int32_t> sequence_of;    // [R*T]: sequence of each position, -1 = none
  int64_t num_sequences = 0;
};

struct SequenceLogProbsResult {
  std::vector<double> sums;     // [num_sequences] summed response log-probs
  std::vector<int64_t> counts;  // [num_sequences] response tokens
  std::vector<double> Means() const;  // sums / counts (0 where count == 0)
  SequenceLogProbsState state;
};

// logits: [R, T, V] (f32 or f64, any backend); targets: host [R*T] ids in [0, V) or -1.
// One sequence per row.
SequenceLogProbsResult SequenceLogProbs(const Tensor& logits, const std::vector<int32_t>& targets);

// Packed form: sequence_of [R*T] gives each position's sequence in [0, num_sequences),
// or -1 (not counted: its target is treated as -1).
SequenceLogProbsResult SequenceLogProbs(const Tensor& logits, const std::vector<int32_t>& targets,
                                        const std::vector<int32_t>& sequence_of,
                                        int64_t num_sequences);

// The targets with uncounted positions (sequence_of -1) set to -1, after checking that
// targets < vocab and sequence_of < num_sequences.
std::vector<int32_t> CountedTargets(const std::vector<int32_t>& targets,
                                    const std::vector<int32_t>& sequence_of,
                                    int64_t num_sequences, int64_t vocab);

// Sums and counts from per-position log-probs logp [M] (any float dtype and backend),
// counting position i when counted_targets[i] >= 0 (CountedTargets).
SequenceLogProbsResult SumSequenceLogProbs(const Tensor& logp,
                                           const std::vector<int32_t>& counted_targets,
                                           const std::vector<int32_t>& sequence_of,
                                           int64_t num_sequences);

// dL/dlogp per position [M] on `backend` in `dtype`: dL/dsum of its sequence, 0 where it
// belongs to none.
Tensor PositionLogProbGrads(const SequenceLogProbsState& state, const std::vector<double>& d_sums,
                            Backend* backend, DType dtype);

// dlogits [R, T, V] (dtype and backend of the logits) for the given dL/dsum_s.
// `dlogits` is overwritten; it is allocated when undefined.
void SequenceLogProbsBackward(const Tensor& logits, const SequenceLogProbsState& state,
                              const std::vector<double>& d_sums, Tensor* dlogits);

// dL/dsum_s from dL/dmean_s (mean_s = sum_s / count_s; 0 where count_s == 0).
std::vector<double> MeanGradToSumGrad(const std::vector<double>& d_means,
                                      const std::vector<int64_t>& counts);

// Targets for a right-padded batch of `rows` x `seq` tokens: row r's response occupies
// positions [response_start[r], length[r]), so
//   targets[r*T + t] = tokens[r*T + t + 1]  if response_start[r] <= t + 1 < length[r]
//                    = -1                   otherwise (prompt, padding, last position).
std::vector<int32_t> ResponseTargets(const std::vector<int32_t>& tokens, int64_t rows,
                                     int64_t seq, const std::vector<int64_t>& response_start,
                                     const std::vector<int64_t>& length);

}  // namespace pmol

#endif  // PMOL_OBJECTIVES_SEQUENCE_LOGPROBS_H_
