// Reward-model training: a scalar value head on the final hidden state of each
// sequence's last real token, trained with the Bradley-Terry loss.
//   r_s = h[row_s, :] . w + b
//   L   = mean_i -log sigmoid(r_chosen_i - r_rejected_i) = mean_i softplus(-(rc_i - rr_i))
//   dL/drc_i = -sigmoid(-(rc_i - rr_i)) / B,  dL/drr_i = -dL/drc_i
//   dL/dh[row_s] = dL/dr_s * w,  dL/dw = sum_s dL/dr_s h[row_s],  dL/db = sum_s dL/dr_s
// h is [R*T, H] (all positions of all rows); the caller names, per pair, the flat row of
// h holding the chosen and the rejected sequence's last non-padding token (row*T + t),
// which also covers packed rows. A flat row named twice gets the sum of its gradients.
// accuracy = fraction of pairs with rc > rr (a tie counts as wrong).
#ifndef PMOL_OBJECTIVES_REWARD_LOSS_H_
#define PMOL_OBJECTIVES_REWARD_LOSS_H_

#include <cstdint>
#include <vector>

#include "pmol/core/tensor.h"

namespace pmol {

struct RewardResult {
  double loss = 0;
  double accuracy = 0;
  std::vector<double> rewards_chosen, rewards_rejected;  // per pair
  Tensor dh;   // [R*T, H], h's dtype and backend; zero except the named rows
  Tensor dw;   // [H], w's dtype and backend
  double db = 0;
};

// h: [R*T, H]; w: [H] (same backend; f32 or f64); chosen_rows / rejected_rows: flat rows
// of h, one per pair.
RewardResult RewardLoss(const Tensor& h, const std::vector<int64_t>& chosen_rows,
                        const std::vector<int64_t>& rejected_rows, const Tensor& w, double b);

// Flat last-token rows of a right-padded batch: row r's sequence has length[r] >= 1
// real tokens, so its last token sits at flat row r*seq + length[r] - 1.
std::vector<int64_t> LastTokenRows(const std::vector<int64_t>& length, int64_t seq);

}  // namespace pmol

#endif  // PMOL_OBJECTIVES_REWARD_LOSS_H_
