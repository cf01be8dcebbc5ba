// See dpo_loss.h.
#include "pmol/objectives/dpo_loss.h"

#include <algorithm>
#include <cmath>

#include "kernels/check.h"

namespace pmol {

double Softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }
double LogSigmoid(double x) { return -Softplus(-x); }
double Sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

DpoResult DpoLoss(const DpoOptions& options, const DpoInputs& in) {
  const size_t n = in.policy_chosen.size();
  PMOL_CHECK(in.policy_rejected.size() == n && in.ref_chosen.size() == n &&
             in.ref_rejected.size() == n);
  PMOL_CHECK(options.beta > 0);
  const bool normalize = options.loss == DpoOptions::kIpo && options.ipo_length_normalize;
  if (normalize) PMOL_CHECK(in.chosen_tokens.size() == n && in.rejected_tokens.size() == n);
  const double beta = options.beta, eps = options.label_smoothing;

  DpoResult r;
  r.d_policy_chosen.assign(n, 0.0);
  r.d_policy_rejected.assign(n, 0.0);
  r.losses.assign(n, 0.0);
  r.rewards_chosen.assign(n, 0.0);
  r.rewards_rejected.assign(n, 0.0);
  r.margins.assign(n, 0.0);
  r.correct.assign(n, 0);
  if (n == 0) return r;
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0, hits = 0;
  for (size_t i = 0; i < n; ++i) {
    double scale_c = 1.0, scale_r = 1.0;  // d term / d summed log-prob
    if (normalize) {
      PMOL_CHECK(in.chosen_tokens[i] > 0 && in.rejected_tokens[i] > 0);
      scale_c = 1.0 / static_cast<double>(in.chosen_tokens[i]);
      scale_r = 1.0 / static_cast<double>(in.rejected_tokens[i]);
    }
    const double chosen_ratio = (in.policy_chosen[i] - in.ref_chosen[i]) * scale_c;
    const double rejected_ratio = (in.policy_rejected[i] - in.ref_rejected[i]) * scale_r;
    const double delta = chosen_ratio - rejected_ratio;
    const double x = beta * delta;
    double loss = 0, dloss_ddelta = 0;
    switch (options.loss) {
      case DpoOptions::kSigmoid:
        loss = Softplus(-x);
        dloss_ddelta = -beta * Sigmoid(-x);
        break;
      case DpoOptions::kIpo: {
        const double d = delta - 1.0 / (2.0 * beta);
        loss = d * d;
        dloss_ddelta = 2.0 * d;
        break;
      }
      case DpoOptions::kHinge:
        loss = std::max(0.0, 1.0 - x);
        dloss_ddelta = 1.0 - x > 0 ? -beta : 0.0;
        break;
      case DpoOptions::kConservative:
        loss = (1.0 - eps) * Softplus(-x) + eps * Softplus(x);
        dloss_ddelta = -beta * (1.0 - eps) * Sigmoid(-x) + beta * eps * Sigmoid(x);
        break;
    }
    r.losses[i] = loss;
    total += loss;
    r.d_policy_chosen[i] = dloss_ddelta * scale_c * inv_n;
    r.d_policy_rejected[i] = -dloss_ddelta * scale_r * inv_n;
    r.rewards_chosen[i] = beta * chosen_ratio;
    r.rewards_rejected[i] = beta * rejected_ratio;
    r.margins[i] = r.rewards_chosen[i] - r.rewards_rejected[i];
    r.correct[i] = r.rewards_chosen[i] > r.rewards_rejected[i];
    hits += r.correct[i];
  }
  r.loss = total * inv_n;
  r.accuracy = hits * inv_n;
  return r;
}

}  // namespace pmol
