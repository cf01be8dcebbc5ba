// The training loop; see trainer.h.
#include "pmol/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "pmol/core/status.h"
#include "pmol/data/batching.h"
#include "pmol/data/sampler.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/checkpoint_store.h"
#include "pmol/optim/adamw.h"
#include "pmol/optim/grad_clip.h"
#include "pmol/optim/lr_schedule.h"
#include "pmol/train/evaluator.h"
#include "pmol/train/metrics_accumulator.h"
#include "pmol/train/metrics_log.h"
#include "pmol/train/progress.h"
#include "pmol/train/run_components.h"
#include "pmol/train/run_data.h"
#include "pmol/train/run_outputs.h"
#include "pmol/train/train_checkpoint.h"
#include "proto/run_config_io.h"
#include "proto/run_config_validation.h"

namespace pmol {
namespace {

using Clock = std::chrono::steady_clock;
using ReferencePair = std::pair<std::vector<double>, std::vector<double>>;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Pads the batch's pairs to the longest sequence of the batch, rounded up to 8 (at most
// the batch's own length), instead of data.max_length: the padding is never attended to
// and costs compute.
data::PreferenceBatch TrimPadding(const data::PreferenceDataset& dataset, data::PreferenceBatch batch,
                                  int32_t pad_id) {
  int32_t longest = 1;
  for (const data::SequenceBatch* rows : {&batch.chosen, &batch.rejected}) {
    for (int32_t r = 0; r < rows->rows; ++r) {
      int32_t n = 0;
      for (int32_t t = 0; t < rows->seq_len; ++t) n += rows->attention_mask[r * rows->seq_len + t];
      longest = std::max(longest, n);
    }
  }
  const int32_t seq = std::min(batch.chosen.seq_len, (longest + 7) / 8 * 8);
  if (seq == batch.chosen.seq_len) return batch;
  data::PreferenceBatch trimmed =
      data::MakePaddedBatch(dataset, batch.pair_index, batch.chosen.rows, seq, pad_id);
  return trimmed;
}

class Trainer {
 public:
  Trainer(config::RunConfig config, const TrainerOptions& options)
      : config_(std::move(config)), options_(options), out_(options.out ? *options.out : std::cout) {}

  absl::StatusOr<TrainerResult> Run();

 private:
  absl::Status Setup();
  absl::Status PrecomputeReference();
  absl::Status Resume();
  absl::Status TrainStep();
  absl::Status Evaluate(bool final_eval);
  absl::Status Checkpoint();
  ReferencePair CachedReference(const EvalReference& cache, const data::PreferenceBatch& batch) const;

  config::RunConfig config_;
  TrainerOptions options_;
  std::ostream& out_;
  std::string output_dir_, checkpoint_dir_;
  std::unique_ptr<RunComponents> run_;
  RunData data_;
  std::unique_ptr<data::Sampler> sampler_;
  std::unique_ptr<data::PreferenceBatcher> batcher_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<CheckpointStore> store_;
  std::unique_ptr<MetricsLog> metrics_;
  LrScheduleOptions schedule_;
  int64_t total_steps_ = 0;
  int32_t accumulation_ = 1;
  TrainerState state_;
  int64_t resumed_from_ = -1;
  int64_t last_checkpoint_step_ = -1;
  bool precompute_ = false;
  EvalReference train_reference_, eval_reference_;  // precomputed reference log-probs

  // Since the last progress line.
  std::unique_ptr<MetricsAccumulator> window_;
  MetricsAccumulator NewWindow() const;
  double window_grad_norm_ = 0;
  int64_t window_steps_ = 0;
  Clock::time_point window_start_, run_start_;
  int64_t run_start_step_ = 0;
};

MetricsAccumulator Trainer::NewWindow() const {
  const bool grouped = run_->adapters != nullptr && run_->adapters->options().has_router();
  const StepOptions options = StepOptionsFromConfig(config_.objective(), run_->num_preferences);
  return MetricsAccumulator(run_->num_preferences, options.kind, options,
                            grouped ? &run_->adapters->options().layout : nullptr, run_->backend);
}

absl::Status Trainer::Setup() {
  absl::Status valid = config::ValidateRunConfig(config_);
  if (!valid.ok()) return absl::InvalidArgumentError(std::string(valid.message()));
  if (config_.data().packing()) {
    return absl::UnimplementedError(
        "data.packing: packed rows need block-diagonal attention, which pmol does not have yet; "
        "set data.packing: false");
  }
  output_dir_ = config_.output_dir();
  if (output_dir_.empty()) return absl::InvalidArgumentError("output_dir: required by `pmol train`");
  checkpoint_dir_ = config_.checkpoint().dir().empty() ? output_dir_ + "/checkpoints" : config_.checkpoint().dir();
  PMOL_RETURN_IF_ERROR(MakeDirectories(output_dir_));

  PMOL_ASSIGN_OR_RETURN(run_, BuildRunComponents(config_, ""));
  PMOL_ASSIGN_OR_RETURN(data_, LoadRunData(config_, run_->model->config().vocab_size, &out_));
  if (run_->adapters && run_->adapters->options().has_router()) {
    for (const data::TokenizedPair& p : data_.train.pairs) {
      if (p.preference < run_->num_preferences) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          data_.train_options.sources[p.source].path, ":", p.line, ": preference ", p.preference,
          " has no expert group (adapter has ", run_->num_preferences, " groups)"));
    }
  }
  sampler_ = std::make_unique<data::Sampler>(data_.train.source_sizes, data_.train.mix_weights,
                                             /*samples_per_epoch=*/0, data_.train_options.shuffle,
                                             config_.seed(), /*rank=*/0, /*world_size=*/1);
  batcher_ = std::make_unique<data::PreferenceBatcher>(data_.train, data_.train_options, sampler_.get(),
                                                       data_.pad_id);

  const config::OptimizerConfig& oc = config_.optimizer();
  accumulation_ = oc.grad_accumulation_steps();
  const int64_t pairs_per_step = static_cast<int64_t>(config_.data().micro_batch_size()) * accumulation_;
  total_steps_ = oc.max_steps() > 0
                     ? oc.max_steps()
                     : static_cast<int64_t>(std::ceil(oc.epochs() * sampler_->epoch_size() /
                                                      static_cast<double>(pairs_per_step)));
  total_steps_ = std::max<int64_t>(total_steps_, 1);
  schedule_.kind = oc.schedule() == config::OptimizerConfig::CONSTANT ? LrScheduleOptions::kConstant
                   : oc.schedule() == config::OptimizerConfig::LINEAR ? LrScheduleOptions::kLinear
                                                                       : LrScheduleOptions::kCosine;
  schedule_.lr = oc.lr();
  schedule_.warmup_steps = oc.warmup_steps();
  schedule_.total_steps = total_steps_;
  schedule_.min_lr_ratio = oc.min_lr_ratio();
  PMOL_RETURN_IF_ERROR(ValidateLrScheduleOptions(schedule_));

  AdamWOptions ao;
  ao.lr = oc.lr();
  ao.beta1 = oc.beta1();
  ao.beta2 = oc.beta2();
  ao.eps = oc.eps();
  ao.weight_decay = oc.weight_decay();
  absl::Status adam = ValidateAdamWOptions(ao);
  if (!adam.ok()) return absl::InvalidArgumentError(absl::StrCat("optimizer.", adam.message()));
  optimizer_ = std::make_unique<AdamW>(ao);
  NamedTensors params = run_->TrainableParams(), grads = run_->TrainableGrads();
  for (size_t i = 0; i < params.size(); ++i) {
    PMOL_RETURN_IF_ERROR(optimizer_->AddParam(params[i].first, params[i].second, grads[i].second,
                                              run_->Decays(params[i].first)));
  }
  store_ = std::make_unique<CheckpointStore>(checkpoint_dir_, config_.checkpoint().keep_last());
  state_.seed = config_.seed();
  precompute_ = config_.objective().kind() == config::ObjectiveConfig::DPO &&
                config_.objective().precompute_reference();

  int64_t trainable = 0;
  for (const auto& [name, t] : params) trainable += t.numel();
  int64_t model_params = 0;
  for (const auto& [name, t] : NamedWeights(run_->model->config(), run_->model->weights())) model_params += t.numel();
  out_ << absl::StrFormat(
      "model %s: %.2fM parameters; trains %d tensors, %.3fM parameters (%.2f%%)\n",
      config_.model().path(), model_params / 1e6, params.size(), trainable / 1e6,
      100.0 * trainable / std::max<int64_t>(model_params, 1));
  out_ << absl::StrFormat("%d optimizer steps of %d pairs (%d x %d), %d pairs per epoch\n", total_steps_,
                          pairs_per_step, config_.data().micro_batch_size(), accumulation_,
                          sampler_->epoch_size());
  return absl::OkStatus();
}

absl::Status Trainer::PrecomputeReference() {
  if (!precompute_) return absl::OkStatus();
  const Clock::time_point start = Clock::now();
  PMOL_ASSIGN_OR_RETURN(train_reference_,
                        ComputeEvalReference(*run_, data_.train, config_.data().micro_batch_size(),
                                             config_.data().max_length(), data_.pad_id, /*max_pairs=*/0));
  if (!data_.eval.pairs.empty()) {
    PMOL_ASSIGN_OR_RETURN(eval_reference_,
                          ComputeEvalReference(*run_, data_.eval, config_.data().micro_batch_size(),
                                               config_.data().max_length(), data_.pad_id,
                                               config_.eval().max_pairs()));
  }
  out_ << absl::StrFormat("reference log-probs of %d train + %d eval pairs precomputed in %s\n",
                          data_.train.pairs.size(), eval_reference_.chosen.size(),
                          FormatDuration(Seconds(start)));
  return absl::OkStatus();
}

ReferencePair Trainer::CachedReference(const EvalReference& cache,
                                       const data::PreferenceBatch& batch) const {
  ReferencePair ref;
  for (int32_t i = 0; i < batch.num_pairs; ++i) {
    ref.first.push_back(cache.chosen[batch.pair_index[i]]);
    ref.second.push_back(cache.rejected[batch.pair_index[i]]);
  }
  return ref;
}

absl::Status Trainer::Resume() {
  if (!config_.checkpoint().resume()) return absl::OkStatus();
  std::vector<std::string> warnings;
  PMOL_ASSIGN_OR_RETURN(std::optional<CheckpointInfo> latest, store_->LatestValid(&warnings));
  for (const std::string& w : warnings) out_ << "warning: " << w << "\n";
  if (!latest.has_value()) return absl::OkStatus();
  NamedTensors params = run_->TrainableParams();
  PMOL_ASSIGN_OR_RETURN(state_, LoadTrainCheckpoint(*latest, config_, params, *optimizer_));
  PMOL_RETURN_IF_ERROR(sampler_->Restore(state_.sampler));
  resumed_from_ = state_.step;
  last_checkpoint_step_ = state_.step;
  out_ << "resumed from " << latest->dir << " (step " << state_.step << ")\n";
  return absl::OkStatus();
}

absl::Status Trainer::TrainStep() {
  run_->ZeroGrads();
  std::vector<StepMetrics> micro;
  double loss = 0;
  int64_t tokens = 0;
  for (int32_t a = 0; a < accumulation_; ++a) {
    data::PreferenceBatch batch = TrimPadding(data_.train, batcher_->Next(), data_.pad_id);
    if (run_->adapters) run_->adapters->SetTraining(true, config_.seed(), state_.step * accumulation_ + a);
    ReferencePair cached;
    if (precompute_) cached = CachedReference(train_reference_, batch);
    PMOL_ASSIGN_OR_RETURN(StepMetrics m,
                          run_->step->Run(batch, 1.0 / accumulation_, precompute_ ? &cached : nullptr));
    loss += m.loss / accumulation_;  // each micro-batch's loss enters with weight 1/A
    tokens += m.tokens;
    micro.push_back(std::move(m));
  }
  state_.sampler = sampler_->state();
  std::vector<Tensor> grads;
  for (auto& [name, g] : run_->TrainableGrads()) grads.push_back(g);
  const double norm = ClipGradNorm(grads, config_.optimizer().max_grad_norm());
  const double lr = LearningRate(schedule_, state_.step);
  if (!std::isfinite(loss) || !std::isfinite(norm)) {
    ++state_.skipped_steps;
    out_ << absl::StrFormat("warning: step %d skipped: loss %g, gradient norm %g (%d skipped so far)\n",
                            state_.step + 1, loss, norm, state_.skipped_steps);
    if (state_.skipped_steps > config_.optimizer().max_skipped_steps()) {
      return absl::AbortedError(absl::StrFormat(
          "stopping at step %d: the loss or gradient norm is not finite (loss %g, norm %g) and %d "
          "step(s) were skipped, more than optimizer.max_skipped_steps = %d; lower optimizer.lr, "
          "check the data, or resume from the last checkpoint",
          state_.step + 1, loss, norm, state_.skipped_steps,
          config_.optimizer().max_skipped_steps()));
    }
  } else {
    optimizer_->Step(lr);
    for (const StepMetrics& m : micro) window_->Add(m);
    window_grad_norm_ += norm;
    ++window_steps_;
  }
  state_.tokens_seen += tokens;
  ++state_.step;

  const bool last = state_.step == total_steps_;
  if (state_.step % config_.logging().every_steps() == 0 || last) {
    const double window_seconds = Seconds(window_start_);
    ProgressFigures f;
    f.step = state_.step;
    f.total_steps = total_steps_;
    f.epoch = state_.sampler.epoch +
              static_cast<double>(state_.sampler.consumed) / std::max<int64_t>(sampler_->epoch_size(), 1);
    EvalResult summary = window_->Finish();
    summary.preference_names = run_->preference_names;
    f.metrics = summary.Named();
    f.lr = lr;
    f.grad_norm = window_steps_ > 0 ? window_grad_norm_ / window_steps_ : norm;
    f.tokens_per_second = window_seconds > 0 ? window_->tokens() / window_seconds : 0;
    f.elapsed_seconds = Seconds(run_start_);
    const int64_t done = state_.step - run_start_step_;
    f.eta_seconds = done > 0 ? f.elapsed_seconds / done * (total_steps_ - state_.step) : 0;
    out_ << ProgressLine(f) << std::endl;
    std::map<std::string, double> scalars = f.metrics;
    scalars["lr"] = lr;
    scalars["grad_norm"] = f.grad_norm;
    scalars["epoch"] = f.epoch;
    scalars["tokens_per_second"] = f.tokens_per_second;
    scalars["tokens_seen"] = static_cast<double>(state_.tokens_seen);
    scalars["skipped_steps"] = static_cast<double>(state_.skipped_steps);
    if (metrics_) PMOL_RETURN_IF_ERROR(metrics_->Write(state_.step, "train", scalars));
    window_ = std::make_unique<MetricsAccumulator>(NewWindow());
    window_grad_norm_ = 0;
    window_steps_ = 0;
    window_start_ = Clock::now();
  }
  return absl::OkStatus();
}

absl::Status Trainer::Evaluate(bool final_eval) {
  if (data_.eval.pairs.empty()) return absl::OkStatus();
  const Clock::time_point start = Clock::now();
  if (run_->adapters) run_->adapters->SetTraining(false, config_.seed(), 0);
  PMOL_ASSIGN_OR_RETURN(
      EvalResult result,
      EvaluateDataset(*run_, data_.eval, config_.data().micro_batch_size(), config_.data().max_length(),
                      data_.pad_id, config_.eval().max_pairs(), precompute_ ? &eval_reference_ : nullptr));
  const std::map<std::string, double> named = result.Named();
  if (metrics_) PMOL_RETURN_IF_ERROR(metrics_->Write(state_.step, "eval", named));
  auto get = [&](const char* name) {
    auto it = named.find(name);
    return it == named.end() ? std::nan("") : it->second;
  };
  std::string line = absl::StrFormat("eval at step %d: %d pairs | loss %.4f", state_.step, result.pairs,
                                     get("loss/total"));
  if (result.kind != ObjectiveKind::kSft) {
    absl::StrAppendFormat(&line, " | acc %.3f | margin %.3f", get("rewards/accuracy"), get("rewards/margins"));
  }
  out_ << line << " | " << FormatDuration(Seconds(start)) << "\n";
  if (final_eval) {
    PMOL_RETURN_IF_ERROR(WriteEvalResult(output_dir_ + "/eval.json", result));
  }
  return absl::OkStatus();
}

absl::Status Trainer::Checkpoint() {
  if (last_checkpoint_step_ == state_.step) return absl::OkStatus();
  const Clock::time_point start = Clock::now();
  PMOL_ASSIGN_OR_RETURN(CheckpointInfo info, SaveTrainCheckpoint(*store_, config_, state_,
                                                                  run_->TrainableParams(), *optimizer_));
  if (metrics_) PMOL_RETURN_IF_ERROR(metrics_->Flush());
  last_checkpoint_step_ = state_.step;
  out_ << "checkpoint " << info.dir << " (" << FormatDuration(Seconds(start)) << ")\n";
  return absl::OkStatus();
}

absl::StatusOr<TrainerResult> Trainer::Run() {
  PMOL_RETURN_IF_ERROR(Setup());
  PMOL_RETURN_IF_ERROR(PrecomputeReference());  // from the base weights, before a resume
  PMOL_RETURN_IF_ERROR(Resume());
  const std::string jsonl = config_.logging().metrics_file().empty() ? output_dir_ + "/metrics.jsonl"
                                                                      : config_.logging().metrics_file();
  const std::string tensorboard = config_.logging().tensorboard() ? output_dir_ + "/tensorboard" : "";
  PMOL_ASSIGN_OR_RETURN(metrics_, MetricsLog::Open(jsonl, tensorboard, resumed_from_));
  PMOL_RETURN_IF_ERROR(WriteFileAtomically(output_dir_ + "/run_config.textproto",
                                           {config::EffectiveRunConfigToText(config_)}));

  window_ = std::make_unique<MetricsAccumulator>(NewWindow());
  run_start_ = window_start_ = Clock::now();
  run_start_step_ = state_.step;
  const int32_t eval_every = config_.eval().every_steps();
  const int32_t checkpoint_every = config_.checkpoint().every_steps();
  while (state_.step < total_steps_) {
    if (options_.stop_requested != nullptr && *options_.stop_requested) {
      PMOL_RETURN_IF_ERROR(Checkpoint());
      return absl::CancelledError(absl::StrCat("stopped by a signal after step ", state_.step,
                                               "; the checkpoint in ", checkpoint_dir_,
                                               " resumes the run (run the same command again)"));
    }
    PMOL_RETURN_IF_ERROR(TrainStep());
    // Evaluation and checkpoints do not count in the training throughput.
    const Clock::time_point pause = Clock::now();
    if (eval_every > 0 && state_.step % eval_every == 0 && state_.step < total_steps_) {
      PMOL_RETURN_IF_ERROR(Evaluate(false));
    }
    if (checkpoint_every > 0 && state_.step % checkpoint_every == 0) PMOL_RETURN_IF_ERROR(Checkpoint());
    window_start_ += Clock::now() - pause;
  }
  PMOL_RETURN_IF_ERROR(Checkpoint());
  PMOL_RETURN_IF_ERROR(Evaluate(true));
  PMOL_RETURN_IF_ERROR(metrics_->Flush());
  PMOL_RETURN_IF_ERROR(WriteRunOutputs(*run_, output_dir_, &out_));
  TrainerResult result;
  result.steps = state_.step;
  result.skipped_steps = state_.skipped_steps;
  result.resumed_from = resumed_from_;
  result.output_dir = output_dir_;
  return result;
}

}  // namespace

absl::StatusOr<TrainerResult> RunTraining(const config::RunConfig& config, const TrainerOptions& options) {
  Trainer trainer(config, options);
  return trainer.Run();
}

}  // namespace pmol
