// One step's losses, metrics and gradients; see preference_step.h.
#include "pmol/train/preference_step.h"

#include <algorithm>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"
#include "pmol/model/head_logprobs.h"
#include "pmol/objectives/reward_loss.h"
#include "pmol/objectives/router_losses.h"
#include "pmol/objectives/sequence_logprobs.h"
#include "pmol/objectives/sft_loss.h"
#include "pmol/train/step_rows.h"

namespace pmol {
namespace {

// Response log-probs with the LM head applied at the scored tokens only: prompt and
// padding positions need no vocabulary GEMM. A frozen head (adapters, or a reference)
// goes through head_logprobs.h, a chunk of rows at a time with the gradient basis kept
// instead of the logits; a trained head (full fine-tuning) keeps the logits for its dW.
struct ResponseLogits {
  Tensor hidden;     // [N, H] final hidden states (the head's input)
  Tensor positions;  // i32 [M] on the backend: the rows of `hidden` that predict a reply token
  Tensor logits;     // [1, M, V] when the head is trained, else undefined
  HeadLogProbs frozen;  // when the head is frozen
  // Per head position: the target token (-1: not counted), its sequence, and the frozen
  // head's targets with the uncounted ones dropped (CountedTargets).
  std::vector<int32_t> selected, sequence_of, counted;
  SequenceLogProbsResult lp;  // after ReadResponseLogProbs
};

absl::StatusOr<Tensor> RunForward(LlamaModel* model, const StepRows& rows, ForwardState* keep,
                                  LinearAdapters* adapters) {
  return model->ForwardHidden(rows.ids, rows.count, rows.seq, keep, adapters,
                              rows.shared ? &rows.layout : nullptr);
}

// The router figures of every adapted module into m: L_group and L_bal (means over
// modules), the router mass per preference (mean over modules, and per layer the mean over
// that layer's modules), the positions it averages over, and L_bal's slot sums.
void AddRouterFigures(const PmolAdapters& adapters, const RouterLossFigures& f, StepMetrics* m) {
  const ExpertLayout& layout = adapters.options().layout;
  const std::vector<AdaptedModule>& modules = adapters.modules();
  const double count = static_cast<double>(modules.size());
  const int64_t P = f.preferences;
  std::map<int64_t, int32_t> modules_in_layer;
  for (const AdaptedModule& am : modules) ++modules_in_layer[am.layer];
  std::map<int64_t, size_t> layer_index;
  for (const auto& [layer, n] : modules_in_layer) {
    layer_index[layer] = m->router_layers.size();
    m->router_layers.push_back(layer);
  }
  m->router_positions = f.positions;
  m->router_mass.assign(P + 1, std::vector<double>(P + 1, 0.0));
  m->router_mass_by_layer.assign(P + 1, std::vector<std::vector<double>>(
                                            m->router_layers.size(), std::vector<double>(P + 1, 0.0)));
  for (size_t j = 0; j < modules.size(); ++j) {
    m->group += f.group[j] / count;
    m->balance += f.balance[j] / count;
    const size_t l = layer_index[modules[j].layer];
    const double in_layer = modules_in_layer[modules[j].layer];
    for (int64_t p = 0; p <= P; ++p) {
      const std::vector<double> mass = f.GroupMass(layout, static_cast<int64_t>(j), p);
      for (size_t k = 0; k < mass.size(); ++k) {
        m->router_mass[p][k] += mass[k] / count;
        m->router_mass_by_layer[p][l][k] += mass[k] / in_layer;
      }
    }
    const double* sums = f.SlotSums(static_cast<int64_t>(j), P);
    m->router_slot_sums.emplace_back(sums, sums + f.slots);
  }
}

// Queues the auxiliary router losses of every adapted module on the device (labels: the
// pair's preference at response positions) and their gradients into each module's
// aux_grad when `backward`; nothing when the adapters have no router.
std::optional<RouterLossBatch> QueueRouterLosses(PmolAdapters* adapters, const StepOptions& o,
                                                 const StepRows& rows, double loss_scale,
                                                 bool backward, Backend* be) {
  if (adapters == nullptr || !adapters->options().has_router()) return std::nullopt;
  std::vector<AdaptedModule>& modules = adapters->modules();
  const int64_t N = static_cast<int64_t>(rows.weight.size()), T = rows.seq;
  std::vector<int32_t> labels(N, -1);
  for (int64_t n = 0; n < N; ++n) {
    if (rows.response[n] && rows.weight[n]) labels[n] = rows.preference[n / T];
  }
  const double count = static_cast<double>(modules.size());
  std::optional<RouterLossBatch> router(std::in_place, adapters->options().layout, labels,
                                        rows.weight, static_cast<int64_t>(modules.size()), be);
  std::vector<Tensor*> dgs;
  for (size_t j = 0; j < modules.size(); ++j) {
    AdaptedModule& am = modules[j];
    if (backward) {
      am.aux_grad = Tensor::Empty(am.cache.probs.shape(), DType::kF64, be);
      dgs.push_back(&am.aux_grad);
    }
    router->AddModule(static_cast<int64_t>(j), am.cache.probs, o.group_label_smoothing,
                      loss_scale * o.group_loss_weight / count,
                      backward ? &am.aux_grad : nullptr);
  }
  router->Finish(loss_scale * o.balance_loss_weight / count, dgs);
  return router;
}

// Queues the forward and the LM head at the reply tokens; ReadResponseLogProbs then reads
// the per-sequence sums (the host waits for the device there).
absl::StatusOr<ResponseLogits> QueueResponseHead(LlamaModel* model, const StepRows& rows,
                                                 ForwardState* keep, LinearAdapters* adapters,
                                                 bool head_trained) {
  ResponseLogits r;
  PMOL_ASSIGN_OR_RETURN(r.hidden, RunForward(model, rows, keep, adapters));
  std::vector<int32_t> positions = rows.head_rows;
  r.selected = rows.head_targets;
  r.sequence_of = rows.head_sequence;
  if (positions.empty()) {  // no reply token at all: one uncounted position keeps shapes valid
    positions.push_back(0);
    r.selected.push_back(-1);
    r.sequence_of.push_back(-1);
  }
  const int64_t m = static_cast<int64_t>(positions.size()), v = model->config().vocab_size;
  r.positions = Tensor::FromHost(positions.data(), {m}, DType::kI32, model->backend());
  if (head_trained) {
    r.logits = model->HeadAt(r.hidden, r.positions).Reshape({1, m, v});
    return r;
  }
  r.counted = CountedTargets(r.selected, r.sequence_of, rows.sequences, v);
  const Tensor targets = Tensor::FromHost(r.counted.data(), {m}, DType::kI32, model->backend());
  r.frozen = HeadLogProbsAt(model->Head(), r.hidden, r.positions, targets,
                            /*with_basis=*/keep != nullptr);
  return r;
}

void ReadResponseLogProbs(const StepRows& rows, ResponseLogits* r) {
  r->lp = r->logits.defined()
              ? SequenceLogProbs(r->logits, r->selected, r->sequence_of, rows.sequences)
              : SumSequenceLogProbs(r->frozen.logp, r->counted, r->sequence_of, rows.sequences);
}

std::vector<double> Slice(const std::vector<double>& v, size_t begin, size_t count) {
  return std::vector<double>(v.begin() + begin, v.begin() + begin + count);
}

}  // namespace

StepOptions StepOptionsFromConfig(const config::ObjectiveConfig& c, int32_t num_preferences) {
  StepOptions o;
  switch (c.kind()) {
    case config::ObjectiveConfig::DPO: o.kind = ObjectiveKind::kDpo; break;
    case config::ObjectiveConfig::SFT: o.kind = ObjectiveKind::kSft; break;
    case config::ObjectiveConfig::REWARD: o.kind = ObjectiveKind::kReward; break;
  }
  switch (c.dpo_loss()) {
    case config::ObjectiveConfig::SIGMOID: o.dpo.loss = DpoOptions::kSigmoid; break;
    case config::ObjectiveConfig::IPO: o.dpo.loss = DpoOptions::kIpo; break;
    case config::ObjectiveConfig::HINGE: o.dpo.loss = DpoOptions::kHinge; break;
    case config::ObjectiveConfig::CONSERVATIVE: o.dpo.loss = DpoOptions::kConservative; break;
  }
  o.dpo.beta = c.beta();
  o.dpo.label_smoothing = c.label_smoothing();
  o.dpo.ipo_length_normalize = c.ipo_length_normalize();
  o.group_loss_weight = c.group_loss_weight();
  o.group_label_smoothing = c.group_label_smoothing();
  o.balance_loss_weight = c.balance_loss_weight();
  o.share_prompt = c.share_prompt();
  o.num_preferences = std::max(1, num_preferences);
  return o;
}

absl::Status CheckBatch(const data::PreferenceBatch& b, int32_t num_preferences) {
  if (b.num_pairs <= 0) return absl::InvalidArgumentError("batch: no pairs");
  if (b.chosen.seq_len != b.rejected.seq_len)
    return absl::InvalidArgumentError("batch: chosen and rejected rows differ in length");
  for (int32_t i = 0; i < b.num_pairs; ++i) {
    if (b.pair_row[i] != i || b.pair_segment[i] != 0)
      return absl::UnimplementedError(
          "batch: packed rows need block-diagonal attention, which is not implemented; "
          "set data.packing: false");
    if (b.preference[i] < 0 || b.preference[i] >= num_preferences)
      return absl::InvalidArgumentError(absl::StrCat(
          "pairs[", i, "].preference: ", b.preference[i], " is outside [0, ", num_preferences,
          ") (one label per preference group)"));
  }
  return absl::OkStatus();
}

std::map<std::string, double> StepMetrics::Named(
    ObjectiveKind kind, const std::vector<std::string>& preference_names) const {
  std::map<std::string, double> out;
  const char* main_name = kind == ObjectiveKind::kDpo ? "loss/dpo"
                          : kind == ObjectiveKind::kSft ? "loss/sft" : "loss/reward";
  out["loss/total"] = loss;
  out[main_name] = main;
  out["loss/group"] = group;
  out["loss/balance"] = balance;
  const size_t P = pref_pairs.empty() ? 0 : pref_pairs.size() - 1;
  auto name_of = [&](size_t p) {
    if (p == P) return std::string();
    return "/" + (p < preference_names.size() && !preference_names[p].empty()
                      ? preference_names[p]
                      : absl::StrCat("pref", p));
  };
  for (size_t p = 0; p <= P && kind != ObjectiveKind::kSft; ++p) {
    if (pref_pairs[p] == 0) continue;
    const double n = static_cast<double>(pref_pairs[p]);
    const std::string suffix = name_of(p);
    out["rewards/chosen" + suffix] = reward_chosen_sum[p] / n;
    out["rewards/rejected" + suffix] = reward_rejected_sum[p] / n;
    out["rewards/margins" + suffix] = (reward_chosen_sum[p] - reward_rejected_sum[p]) / n;
    out["rewards/accuracy" + suffix] = correct_sum[p] / n;
  }
  for (size_t p = 0; p < router_mass.size(); ++p) {
    if (pref_pairs[p] == 0) continue;
    const std::string prefix = p == P ? "router" : "router" + name_of(p);
    for (size_t k = 0; k < router_mass[p].size(); ++k) {
      const bool empty = k + 1 == router_mass[p].size();
      out[absl::StrCat(prefix, empty ? "/empty" : absl::StrCat("/group", k))] = router_mass[p][k];
    }
  }
  return out;
}

PreferenceStep::PreferenceStep(StepOptions options, LlamaModel* model, PmolAdapters* adapters,
                               LlamaWeights* full_grads, LlamaModel* reference,
                               ValueHead* value_head)
    : options_(std::move(options)),
      model_(model),
      adapters_(adapters),
      full_grads_(full_grads),
      reference_(reference),
      value_head_(value_head) {}

absl::StatusOr<std::pair<std::vector<double>, std::vector<double>>>
PreferenceStep::ReferenceLogProbs(const data::PreferenceBatch& batch) {
  const StepRows rows = MakeStepRows(batch, true, options_.share_prompt);
  LlamaModel* ref = adapters_ != nullptr ? model_ : reference_;
  if (ref == nullptr)
    return absl::FailedPreconditionError(
        "DPO with full fine-tuning needs a frozen reference model or precomputed reference "
        "log-probs");
  PMOL_ASSIGN_OR_RETURN(ResponseLogits head, QueueResponseHead(ref, rows, nullptr, /*adapters=*/nullptr,
                                                                /*head_trained=*/false));
  ReadResponseLogProbs(rows, &head);
  const SequenceLogProbsResult& lp = head.lp;
  const size_t B = batch.num_pairs;
  return std::make_pair(Slice(lp.sums, 0, B), Slice(lp.sums, B, B));
}

absl::StatusOr<StepMetrics> PreferenceStep::Run(
    const data::PreferenceBatch& batch, double loss_scale,
    const std::pair<std::vector<double>, std::vector<double>>* cached_reference,
    const GradientsFinal& on_final) {
  return Compute(batch, loss_scale, cached_reference, /*backward=*/true, on_final);
}

absl::StatusOr<StepMetrics> PreferenceStep::Evaluate(
    const data::PreferenceBatch& batch,
    const std::pair<std::vector<double>, std::vector<double>>* cached_reference) {
  if (adapters_ != nullptr) adapters_->SetTraining(false, 0, 0);
  return Compute(batch, /*loss_scale=*/0.0, cached_reference, /*backward=*/false, {});
}

absl::StatusOr<StepMetrics> PreferenceStep::Compute(
    const data::PreferenceBatch& batch, double loss_scale,
    const std::pair<std::vector<double>, std::vector<double>>* cached_reference,
    bool backward, const GradientsFinal& on_final) {
  // With expert groups a label names a group and must exist; otherwise labels only
  // split the metrics, and any non-negative label is fine.
  const bool grouped = adapters_ != nullptr && adapters_->options().has_router();
  int32_t P = options_.num_preferences;
  if (!grouped)
    for (int32_t i = 0; i < batch.num_pairs; ++i) P = std::max(P, batch.preference[i] + 1);
  PMOL_RETURN_IF_ERROR(CheckBatch(batch, P));
  const ObjectiveKind kind = options_.kind;
  const StepRows rows = MakeStepRows(batch, kind != ObjectiveKind::kSft, options_.share_prompt);
  const int64_t B = batch.num_pairs;
  Backend* be = model_->backend();
  const DType dt = model_->dtype();

  StepMetrics m;
  m.pairs = B;
  for (uint8_t w : rows.weight) m.tokens += w;
  m.pref_pairs.assign(P + 1, 0);
  m.reward_chosen_sum.assign(P + 1, 0.0);
  m.reward_rejected_sum.assign(P + 1, 0.0);
  m.correct_sum.assign(P + 1, 0.0);
  m.main_sum.assign(P + 1, 0.0);
  auto add_pair = [&](int64_t i, double rc, double rr, double loss) {
    for (int32_t p : {batch.preference[i], P}) {
      m.pref_pairs[p] += 1;
      m.main_sum[p] += loss;
      m.reward_chosen_sum[p] += rc;
      m.reward_rejected_sum[p] += rr;
      m.correct_sum[p] += rc > rr ? 1.0 : 0.0;
    }
  };

  std::pair<std::vector<double>, std::vector<double>> reference;
  if (kind == ObjectiveKind::kDpo) {
    if (cached_reference != nullptr) {
      reference = *cached_reference;
    } else {
      PMOL_ASSIGN_OR_RETURN(reference, ReferenceLogProbs(batch));
    }
  }

  ForwardState state;
  ForwardState* keep = backward ? &state : nullptr;  // activations for the backward
  Tensor dhidden;
  // The router losses are queued right after the policy forward, so that the device runs
  // them while the host waits for the log-probs; their figures are read after the backward
  // is queued.
  std::optional<RouterLossBatch> router;
  if (kind == ObjectiveKind::kReward) {
    if (value_head_ == nullptr) return absl::FailedPreconditionError("reward training needs a value head");
    PMOL_ASSIGN_OR_RETURN(Tensor hidden, RunForward(model_, rows, keep, adapters_));
    router = QueueRouterLosses(adapters_, options_, rows, loss_scale, backward, be);
    const std::vector<int64_t> chosen_rows(rows.last.begin(), rows.last.begin() + B),
        rejected_rows(rows.last.begin() + B, rows.last.end());
    const Tensor w = value_head_->weight.Reshape({value_head_->weight.numel()});
    RewardResult r = RewardLoss(hidden, chosen_rows, rejected_rows, w, 0.0);
    m.main = r.loss;
    m.main_count = B;
    for (int64_t i = 0; i < B; ++i)  // the per-pair Bradley-Terry loss of reward_loss.h
      add_pair(i, r.rewards_chosen[i], r.rewards_rejected[i],
               Softplus(-(r.rewards_chosen[i] - r.rewards_rejected[i])));
    if (backward) {
      be->Axpy(r.dw.dtype(), loss_scale, r.dw.data(), value_head_->grad.data(), r.dw.numel());
      dhidden = r.dh;
      be->Scale(dt, loss_scale, dhidden.data(), dhidden.numel());
    }
  } else {
    PMOL_ASSIGN_OR_RETURN(ResponseLogits head,
                          QueueResponseHead(model_, rows, keep, adapters_,
                                            /*head_trained=*/full_grads_ != nullptr));
    router = QueueRouterLosses(adapters_, options_, rows, loss_scale, backward, be);
    ReadResponseLogProbs(rows, &head);
    const SequenceLogProbsResult& lp = head.lp;
    std::vector<double> d_sums;
    if (kind == ObjectiveKind::kDpo) {
      DpoInputs in;
      in.policy_chosen = Slice(lp.sums, 0, B);
      in.policy_rejected = Slice(lp.sums, B, B);
      in.ref_chosen = reference.first;
      in.ref_rejected = reference.second;
      in.chosen_tokens.assign(lp.counts.begin(), lp.counts.begin() + B);
      in.rejected_tokens.assign(lp.counts.begin() + B, lp.counts.end());
      const DpoResult r = DpoLoss(options_.dpo, in);
      m.main = r.loss;
      m.main_count = B;
      for (int64_t i = 0; i < B; ++i)
        add_pair(i, r.rewards_chosen[i], r.rewards_rejected[i], r.losses[i]);
      d_sums = r.d_policy_chosen;
      d_sums.insert(d_sums.end(), r.d_policy_rejected.begin(), r.d_policy_rejected.end());
    } else {
      const SftResult r = SftLoss(lp.sums, lp.counts);
      m.main = r.loss;
      m.main_count = r.tokens;
      for (int64_t i = 0; i < B; ++i) add_pair(i, 0.0, 0.0, 0.0);  // counts only: no rewards
      d_sums = r.d_sums;
    }
    if (backward) {
      for (double& d : d_sums) d *= loss_scale;
      if (head.logits.defined()) {
        Tensor dlogits;
        SequenceLogProbsBackward(head.logits, lp.state, d_sums, &dlogits);
        dhidden = model_->HeadAtBackward(
            head.hidden, head.positions,
            dlogits.Reshape({head.positions.numel(), dlogits.dim(-1)}), full_grads_);
      } else {
        const Tensor dlogp = PositionLogProbGrads(lp.state, d_sums, be, head.frozen.logp.dtype());
        dhidden = HeadLogProbsBackward(head.frozen, head.hidden, head.positions, dlogp);
      }
    }
  }

  if (backward) {
    model_->BackwardFromHidden(state, dhidden, full_grads_, on_final);
  }
  if (router.has_value()) AddRouterFigures(*adapters_, router->Read(), &m);
  m.loss = m.main + options_.group_loss_weight * m.group + options_.balance_loss_weight * m.balance;
  if (adapters_ != nullptr) adapters_->ClearCaches();
  return m;
}

}  // namespace pmol
