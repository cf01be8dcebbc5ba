// SFT cross-entropy on response tokens, on top of SequenceLogProbs:
//   L = -(sum_s sum_s-logp) / (sum_s count_s) = mean over ALL response tokens of -log p
// (a token-weighted mean, as torch's cross_entropy with ignore_index over the flattened
// batch; not a mean of per-sequence means). dL/dsum_s = -1 / total_tokens for every s;
// with no response token the loss is 0 with zero gradients.
#ifndef PMOL_OBJECTIVES_SFT_LOSS_H_
#define PMOL_OBJECTIVES_SFT_LOSS_H_

#include <cstdint>
#include <vector>

namespace pmol {

struct SftResult {
  double loss = 0;
  int64_t tokens = 0;          // total response tokens
  std::vector<double> d_sums;  // dL/dsum_s, feed to SequenceLogProbsBackward
};

// sums, counts: SequenceLogProbsResult::sums / ::counts.
SftResult SftLoss(const std::vector<double>& sums, const std::vector<int64_t>& counts);

}  // namespace pmol

#endif  // PMOL_OBJECTIVES_SFT_LOSS_H_
