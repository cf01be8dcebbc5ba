// See router_losses.h.
#include "pmol/objectives/router_losses.h"

#include "kernels/check.h"
#include "kernels/router_loss_math.h"

namespace pmol {
namespace {

// expert_group[e]: the group of expert e (the layout's experts are group-major).
std::vector<int32_t> ExpertGroups(const ExpertLayout& layout) {
  std::vector<int32_t> out;
  for (int32_t k = 0; k < layout.num_groups(); ++k) {
    PMOL_CHECK(layout.experts_per_group[k] >= 1);
    out.insert(out.end(), layout.experts_per_group[k], k);
  }
  return out;
}

double* F64At(Tensor& t, int64_t offset) { return t.data_as<double>() + offset; }

}  // namespace

RouterLossBatch::RouterLossBatch(const ExpertLayout& layout, const std::vector<int32_t>& labels,
                                 const std::vector<uint8_t>& weight, int64_t modules,
                                 Backend* backend)
    : layout_(layout),
      rows_(static_cast<int64_t>(labels.size())),
      modules_(modules),
      preferences_(layout.num_groups()),
      slots_(layout.num_slots()),
      backend_(backend) {
  PMOL_CHECK(backend != nullptr && modules >= 0 && preferences_ >= 1);
  PMOL_CHECK(static_cast<int64_t>(weight.size()) == rows_);
  const std::vector<int32_t> expert_group = ExpertGroups(layout);
  const int64_t columns = preferences_ + 1;
  std::vector<double> w(rows_ * columns, 0.0);
  positions_.assign(columns, 0);
  for (int64_t n = 0; n < rows_; ++n) {
    const int32_t p = labels[n];
    PMOL_CHECK(p < preferences_);
    if (p >= 0) {
      w[n * columns + p] = 1.0;
      ++positions_[p];
      ++positions_[preferences_];
    }
    w[n * columns + preferences_] = weight[n];
  }
  labelled_ = positions_[preferences_];
  labels_ = Tensor::FromHost(labels.data(), {rows_}, DType::kI32, backend);
  expert_group_ = Tensor::FromHost(expert_group.data(),
                                   {static_cast<int64_t>(expert_group.size())}, DType::kI32,
                                   backend);
  weights_ = Tensor::FromHost(w.data(), {rows_, columns}, DType::kF64, backend);
  // Every row of ce_ and dmass_ is written (AddModule, Finish) before it is read.
  ce_ = Tensor::Empty({modules_, rows_}, DType::kF64, backend);
  dmass_ = Tensor::Empty({modules_, slots_}, DType::kF64, backend);
  results_ = Tensor::Zeros({modules_ * (columns * slots_ + columns + 1)}, DType::kF64, backend);
}

void RouterLossBatch::AddModule(int64_t j, const Tensor& g, double label_smoothing,
                                double group_grad_scale, Tensor* dg) {
  PMOL_CHECK(!finished_ && j >= 0 && j < modules_);
  PMOL_CHECK(g.dtype() == DType::kF64 && g.backend() == backend_ && g.numel() == rows_ * slots_);
  if (dg != nullptr) {
    PMOL_CHECK(dg->dtype() == DType::kF64 && dg->backend() == backend_ &&
               dg->numel() == g.numel());
  }
  ++added_;
  if (rows_ == 0) return;
  const int64_t columns = preferences_ + 1;
  // C_j = W^T g: [P + 1, S].
  backend_->GemmTo(DType::kF64, DType::kF64, /*trans_a=*/true, /*trans_b=*/false, columns,
                   slots_, rows_, 1.0, weights_.data(), columns, g.data(), slots_, 0.0,
                   F64At(results_, j * columns * slots_), slots_);
  const double mean = labelled_ > 0 ? 1.0 / static_cast<double>(labelled_) : 0.0;
  backend_->RouterGroupLoss(DType::kF64, g.data(), labels_.data_as<int32_t>(),
                            expert_group_.data_as<int32_t>(), rows_, slots_,
                            layout_.num_experts(), preferences_, label_smoothing,
                            group_grad_scale * mean, F64At(ce_, j * rows_),
                            dg != nullptr ? dg->data() : nullptr);
}

void RouterLossBatch::Finish(double balance_grad_scale, const std::vector<Tensor*>& dgs) {
  PMOL_CHECK(!finished_ && added_ == modules_ &&
             (dgs.empty() || static_cast<int64_t>(dgs.size()) == modules_));
  finished_ = true;
  if (modules_ == 0) return;
  const int64_t columns = preferences_ + 1;
  const int64_t sums_size = modules_ * columns * slots_;
  if (rows_ > 0) {
    // L_group's sums per module and preference: ce [modules, N] times W [N, P + 1].
    backend_->GemmTo(DType::kF64, DType::kF64, false, false, modules_, columns, rows_, 1.0,
                     ce_.data(), rows_, weights_.data(), columns, 0.0,
                     F64At(results_, sums_size), columns);
  }
  backend_->RouterBalanceLoss(DType::kF64, F64At(results_, preferences_ * slots_),
                              columns * slots_, expert_group_.data_as<int32_t>(), modules_,
                              slots_, layout_.num_experts(), preferences_,
                              F64At(results_, sums_size + modules_ * columns), dmass_.data());
  if (rows_ == 0) return;
  for (int64_t j = 0; j < static_cast<int64_t>(dgs.size()); ++j) {
    if (dgs[j] == nullptr) continue;
    PMOL_CHECK(dgs[j]->dtype() == DType::kF64 && dgs[j]->backend() == backend_ &&
               dgs[j]->numel() == rows_ * slots_);
    // dg_j += scale * W[:, P] dM_j^T: [N, 1] x [1, S].
    backend_->GemmTo(DType::kF64, DType::kF64, false, false, rows_, slots_, 1,
                     balance_grad_scale, F64At(weights_, preferences_), columns,
                     F64At(dmass_, j * slots_), slots_, 1.0, dgs[j]->data(), slots_);
  }
}

RouterLossFigures RouterLossBatch::Read() const {
  PMOL_CHECK(finished_);
  RouterLossFigures f;
  f.modules = modules_;
  f.preferences = preferences_;
  f.slots = slots_;
  f.positions = positions_;
  const std::vector<double> all = results_.ToDoubles();
  const int64_t columns = preferences_ + 1;
  const int64_t sums_size = modules_ * columns * slots_;
  f.slot_sums.assign(all.begin(), all.begin() + sums_size);
  const double mean = labelled_ > 0 ? 1.0 / static_cast<double>(labelled_) : 0.0;
  for (int64_t j = 0; j < modules_; ++j) {
    double ce = 0;
    for (int64_t p = 0; p < preferences_; ++p) ce += all[sums_size + j * columns + p];
    f.group.push_back(ce * mean);
    f.balance.push_back(all[sums_size + modules_ * columns + j]);
  }
  return f;
}

std::vector<double> RouterLossFigures::GroupMass(const ExpertLayout& layout, int64_t module,
                                                 int64_t p) const {
  PMOL_CHECK(module >= 0 && module < modules && p >= 0 && p <= preferences);
  const int32_t experts = layout.num_experts();
  std::vector<double> out(preferences + 1, 0.0);
  const int64_t first = p < preferences ? p : 0, last = p < preferences ? p + 1 : preferences;
  for (int64_t q = first; q < last; ++q) {
    const double* sums = SlotSums(module, q);
    for (int32_t s = 0; s < slots; ++s) out[s < experts ? layout.group_of(s) : preferences] += sums[s];
  }
  if (positions[p] > 0)
    for (double& v : out) v /= static_cast<double>(positions[p]);
  return out;
}

double BalanceLossOfSlotSums(const ExpertLayout& layout, const std::vector<double>& slot_sums) {
  const int64_t slots = layout.num_slots();
  PMOL_CHECK(static_cast<int64_t>(slot_sums.size()) == slots);
  const std::vector<int32_t> expert_group = ExpertGroups(layout);
  std::vector<double> dmass(slots);
  return RouterBalanceLossOfMass(slot_sums.data(), expert_group.data(), slots,
                                 layout.num_experts(), layout.num_groups(), dmass.data());
}

}  // namespace pmol
