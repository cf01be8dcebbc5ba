// See sft_loss.h.
#include "pmol/objectives/sft_loss.h"

#include "kernels/check.h"

namespace pmol {

SftResult SftLoss(const std::vector<double>& sums, const std::vector<int64_t>& counts) {
  PMOL_CHECK(sums.size() == counts.size());
  SftResult r;
  r.d_sums.assign(sums.size(), 0.0);
  double total = 0;
  for (size_t s = 0; s < sums.size(); ++s) {
    PMOL_CHECK(counts[s] >= 0);
    r.tokens += counts[s];
    total += sums[s];
  }
  if (r.tokens == 0) return r;
  const double inv = 1.0 / static_cast<double>(r.tokens);
  r.loss = -total * inv;
  for (double& d : r.d_sums) d = -inv;
  return r;
}

}  // namespace pmol
