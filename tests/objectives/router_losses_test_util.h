// One router's L_group and L_bal through RouterLossBatch (a batch of one module on the
// CPU backend), on host doubles: g [N, S] row-major; dg, when not null, gets
// dg += grad_scale * dL/dg. The router-loss tests check these against finite differences,
// closed forms and PyTorch.
#ifndef PMOL_TESTS_OBJECTIVES_ROUTER_LOSSES_TEST_UTIL_H_
#define PMOL_TESTS_OBJECTIVES_ROUTER_LOSSES_TEST_UTIL_H_

#include <cstdint>
#include <vector>

#include "pmol/objectives/router_losses.h"
#include "tests/objectives/objectives_test_util.h"

namespace pmol::testing {

inline void AddInto(const Tensor& d, std::vector<double>* dg) {
  const std::vector<double> v = d.ToDoubles();
  ASSERT_EQ(v.size(), dg->size());
  for (size_t i = 0; i < v.size(); ++i) (*dg)[i] += v[i];
}

inline double GroupSoftLossOf(const ExpertLayout& layout, const std::vector<double>& g,
                              const std::vector<int32_t>& labels, double label_smoothing,
                              double grad_scale, std::vector<double>* dg) {
  const int64_t n = static_cast<int64_t>(labels.size()), slots = layout.num_slots();
  RouterLossBatch batch(layout, labels, std::vector<uint8_t>(n, 0), 1, Cpu());
  const Tensor gt = Tensor::FromHost(g.data(), {n, slots}, DType::kF64, Cpu());
  Tensor d = Tensor::Empty({n, slots}, DType::kF64, Cpu());
  batch.AddModule(0, gt, label_smoothing, grad_scale, dg != nullptr ? &d : nullptr);
  batch.Finish(0.0, {});
  if (dg != nullptr) AddInto(d, dg);
  return batch.Read().group[0];
}

inline double BalanceLossOf(const ExpertLayout& layout, const std::vector<double>& g,
                            const std::vector<uint8_t>& weight, double grad_scale,
                            std::vector<double>* dg) {
  const int64_t n = static_cast<int64_t>(weight.size()), slots = layout.num_slots();
  RouterLossBatch batch(layout, std::vector<int32_t>(n, -1), weight, 1, Cpu());
  const Tensor gt = Tensor::FromHost(g.data(), {n, slots}, DType::kF64, Cpu());
  Tensor d = Tensor::Zeros({n, slots}, DType::kF64, Cpu());
  batch.AddModule(0, gt, 0.0, 0.0, nullptr);
  batch.Finish(grad_scale, {dg != nullptr ? &d : nullptr});
  if (dg != nullptr) AddInto(d, dg);
  return batch.Read().balance[0];
}

}  // namespace pmol::testing

#endif  // PMOL_TESTS_OBJECTIVES_ROUTER_LOSSES_TEST_UTIL_H_
