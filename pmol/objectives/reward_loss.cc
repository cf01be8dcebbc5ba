// See reward_loss.h.
#include "pmol/objectives/reward_loss.h"

#include <map>

#include "pmol/objectives/dpo_loss.h"
#include "pmol/objectives/host_transfer.h"

namespace pmol {

RewardResult RewardLoss(const Tensor& h, const std::vector<int64_t>& chosen_rows,
                        const std::vector<int64_t>& rejected_rows, const Tensor& w, double b) {
  PMOL_CHECK(h.rank() == 2 && w.rank() == 1 && w.dim(0) == h.dim(1));
  PMOL_CHECK(h.dtype() == DType::kF32 || h.dtype() == DType::kF64 || h.dtype() == DType::kBF16);
  PMOL_CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kF64);
  PMOL_CHECK(h.backend() == w.backend());
  PMOL_CHECK(chosen_rows.size() == rejected_rows.size());
  const int64_t hidden = h.dim(1), total_rows = h.dim(0);
  const size_t pairs = chosen_rows.size();
  const std::vector<double> wv = w.ToDoubles();

  // Each named row once, on the host.
  std::map<int64_t, std::vector<double>> hrow, dhrow;
  for (const auto* rows : {&chosen_rows, &rejected_rows}) {
    for (int64_t row : *rows) {
      PMOL_CHECK(row >= 0 && row < total_rows);
      if (!hrow.count(row)) {
        hrow[row] = h.Rows(row, 1).ToDoubles();
        dhrow[row].assign(hidden, 0.0);
      }
    }
  }
  auto reward = [&](int64_t row) {
    double r = b;
    const std::vector<double>& x = hrow[row];
    for (int64_t j = 0; j < hidden; ++j) r += x[j] * wv[j];
    return r;
  };

  RewardResult res;
  res.rewards_chosen.resize(pairs);
  res.rewards_rejected.resize(pairs);
  std::vector<double> dw(hidden, 0.0);
  double total = 0, hits = 0;
  const double inv = pairs > 0 ? 1.0 / static_cast<double>(pairs) : 0.0;
  for (size_t i = 0; i < pairs; ++i) {
    const double rc = reward(chosen_rows[i]), rr = reward(rejected_rows[i]);
    res.rewards_chosen[i] = rc;
    res.rewards_rejected[i] = rr;
    total += Softplus(-(rc - rr));
    hits += rc > rr;
    const double d_rc = -Sigmoid(-(rc - rr)) * inv;
    for (auto [row, d] : {std::pair{chosen_rows[i], d_rc}, std::pair{rejected_rows[i], -d_rc}}) {
      const std::vector<double>& x = hrow[row];
      std::vector<double>& dx = dhrow[row];
      for (int64_t j = 0; j < hidden; ++j) {
        dx[j] += d * wv[j];
        dw[j] += d * x[j];
      }
      res.db += d;
    }
  }
  res.loss = total * inv;
  res.accuracy = hits * inv;
  res.dh = Tensor::Zeros(h.shape(), h.dtype(), h.backend());
  for (const auto& [row, dx] : dhrow) {
    Tensor dst = res.dh.Rows(row, 1);
    objectives_internal::AccumulateDoubles(dx, 1.0, &dst);
  }
  res.dw = objectives_internal::TensorFromDoubles(dw, w.shape(), w.dtype(), w.backend());
  return res;
}

std::vector<int64_t> LastTokenRows(const std::vector<int64_t>& length, int64_t seq) {
  std::vector<int64_t> rows(length.size());
  for (size_t r = 0; r < length.size(); ++r) {
    PMOL_CHECK(length[r] >= 1 && length[r] <= seq);
    rows[r] = static_cast<int64_t>(r) * seq + length[r] - 1;
  }
  return rows;
}

}  // namespace pmol
