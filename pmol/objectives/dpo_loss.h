// The DPO family of preference losses on sequence log-probabilities (DESIGN section 1).
//
// Per pair i, with policy / reference summed response log-probs pc, pr, rc, rr:
//   delta_i = (pc - rc) - (pr - rr)
//   kSigmoid       l = -log sigmoid(beta delta)                      (= softplus(-beta delta))
//   kIpo           l = (delta - 1/(2 beta))^2
//   kHinge         l = max(0, 1 - beta delta)
//   kConservative  l = -(1-eps) log sigmoid(beta delta) - eps log sigmoid(-beta delta)
//   loss = mean_i l_i
// These are TRL's DPOTrainer losses "sigmoid" (with label_smoothing 0), "ipo", "hinge"
// and "sigmoid" with label_smoothing = eps (cDPO).
//
// Decisions:
// - label_smoothing (eps) is used by kConservative only; kSigmoid is always plain DPO.
// - ipo_length_normalize (kIpo only, as TRL does for "ipo"): each of pc, pr, rc, rr is
//   replaced by its per-token mean (divided by that response's token count), so
//   dl/dpc = dl/ddelta / n_chosen and dl/dpr = -dl/ddelta / n_rejected. A pair with a
//   zero token count is an internal error in that mode (the data layer drops such pairs).
// - Rewards use the same (possibly length-normalised) terms as delta, as TRL reports
//   them: reward_chosen = beta (pc - rc), reward_rejected = beta (pr - rr),
//   margin = reward_chosen - reward_rejected = beta delta. accuracy: reward_chosen >
//   reward_rejected strictly (a tie counts as wrong).
// - Hinge at the kink (1 - beta delta == 0): gradient 0 (the subgradient used by relu).
// - log sigmoid(x) = -softplus(-x), softplus(x) = max(x, 0) + log1p(exp(-|x|)): finite
//   for any finite x.
// The reference terms are constants: only gradients for the policy terms are returned.
#ifndef PMOL_OBJECTIVES_DPO_LOSS_H_
#define PMOL_OBJECTIVES_DPO_LOSS_H_

#include <cstdint>
#include <vector>

namespace pmol {

struct DpoOptions {
  enum Loss { kSigmoid, kIpo, kHinge, kConservative };
  Loss loss = kSigmoid;
  double beta = 0.1;
  double label_smoothing = 0;  // eps of kConservative
  bool ipo_length_normalize = false;
};

// One entry per pair. Token counts are needed only with ipo_length_normalize (kIpo);
// they may be left empty otherwise.
struct DpoInputs {
  std::vector<double> policy_chosen, policy_rejected;  // summed log-probs
  std::vector<double> ref_chosen, ref_rejected;
  std::vector<int64_t> chosen_tokens, rejected_tokens;
};

struct DpoResult {
  double loss = 0;                        // mean over pairs (0 for no pairs)
  std::vector<double> d_policy_chosen;    // d loss / d policy_chosen_i
  std::vector<double> d_policy_rejected;  // d loss / d policy_rejected_i
  std::vector<double> losses;             // per pair l_i
  std::vector<double> rewards_chosen, rewards_rejected, margins;
  std::vector<uint8_t> correct;           // rewards_chosen > rewards_rejected
  double accuracy = 0;                    // mean of correct
};

DpoResult DpoLoss(const DpoOptions& options, const DpoInputs& inputs);

// softplus(x) = log(1 + exp(x)) and log sigmoid(x) = -softplus(-x), stable for any x.
double Softplus(double x);
double LogSigmoid(double x);
double Sigmoid(double x);

}  // namespace pmol

#endif  // PMOL_OBJECTIVES_DPO_LOSS_H_
