// The training loop; see trainer.h.
#include "pmol/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "dist/expert_placement.h"
#include "dist/local_comm.h"
#include "dist/process_groups.h"
#include "dist/zero_optimizer.h"
#include "kernels/backend.h"
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
      : config_(std::move(config)), options_(options), null_out_(nullptr) {
    if (options.world == nullptr) local_world_ = std::make_unique<dist::LocalComm>();
    world_ = options.world ? options.world : local_world_.get();
    root_ = world_->rank() == 0;
    out_ = root_ ? (options.out ? options.out : &std::cout) : &null_out_;  // only rank 0 prints
  }

  absl::StatusOr<TrainerResult> Run();

 private:
  absl::Status Setup();
  absl::Status PrecomputeReference();
  absl::Status Resume();
  absl::Status TrainStep();
  absl::Status Evaluate(bool final_eval);
  absl::Status Checkpoint();
  bool StopRequested();
  ReferencePair CachedReference(const EvalReference& cache, const data::PreferenceBatch& batch) const;

  config::RunConfig config_;
  TrainerOptions options_;
  std::unique_ptr<dist::Comm> local_world_;
  dist::Comm* world_ = nullptr;
  bool root_ = true;
  bool groups_made_ = false;
  dist::ProcessGroups groups_;
  std::ostream null_out_;  // no stream buffer: discards what other ranks would print
  std::ostream* out_ = nullptr;
  std::string output_dir_, checkpoint_dir_;
  std::string created_output_dirs_;  // the outermost folder Setup created for output_dir ("" if none)
  std::unique_ptr<RunComponents> run_;
  RunData data_;
  std::unique_ptr<data::Sampler> sampler_;
  std::unique_ptr<dist::ZeroOptimizer> optimizer_;  // every trainable tensor, or (ep > 1) the replicated ones
  std::unique_ptr<dist::ZeroOptimizer> expert_optimizer_;  // ep > 1: this rank's experts
  // Overlap of the gradient reduction with the backward: the tensors (optimizer index)
  // whose gradients each GradientsFinal layer makes final, indexed by layer + 1, per
  // optimizer ([0] optimizer_, [1] expert_optimizer_); and the callback that reports them.
  std::vector<std::vector<size_t>> final_at_layer_[2];
  GradientsFinal on_gradients_final_;
  void SetupOverlap(const NamedTensors (&parts)[2]);
  dist::ExpertPlacement placement_;
  std::vector<CheckpointedOptimizer> CheckpointedOptimizers();
  NamedTensors CheckpointedTrainable();
  absl::Status SetupExpertParallelism();
  std::unique_ptr<CheckpointStore> store_;
  std::unique_ptr<MetricsLog> metrics_;
  LrScheduleOptions schedule_;
  int64_t total_steps_ = 0;
  int32_t accumulation_ = 1;  // micro-batches per rank and step
  int64_t pairs_per_step_ = 0;  // over all ranks
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
  int64_t window_all_steps_ = 0;  // skipped ones included
  dist::CommStats window_gradient_comm_, window_world_comm_, window_expert_comm_, window_expert_gradient_comm_;  // counters at the window's start
  double window_gradient_wait_seconds_ = 0;  // blocked on gradient reductions after the backwards
  // Device memory (run_->backend): the max over the window's steps of each step's peak,
  // and what was in use at the end of the last one.
  int64_t window_peak_bytes_ = 0, window_in_use_bytes_ = 0;
  void StartWindowCounters();
  Clock::time_point window_start_, run_start_;
  int64_t run_start_step_ = 0;
};

MetricsAccumulator Trainer::NewWindow() const {
  const bool grouped = run_->adapters != nullptr && run_->adapters->options().has_router();
  const StepOptions options = StepOptionsFromConfig(config_.objective(), run_->num_preferences);
  return MetricsAccumulator(run_->num_preferences, options.kind, options,
                            grouped ? &run_->adapters->options().layout : nullptr);
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
  if (local_world_ != nullptr && config_.model().device() != "cpu") {
    // One process on a GPU: the world's copies (ZeRO's, with one rank) move GPU buffers.
    PMOL_ASSIGN_OR_RETURN(DeviceType device, ParseDevice(config_.model().device()));
    PMOL_ASSIGN_OR_RETURN(Backend * backend, GetBackend(device, config_.model().threads()));
    local_world_ = std::make_unique<dist::LocalComm>("world", backend);
    world_ = local_world_.get();
  }
  // The groups first: a collective every rank reaches, whatever fails after it.
  PMOL_ASSIGN_OR_RETURN(groups_, dist::MakeProcessGroups(world_, config_.parallel()));
  groups_made_ = true;
  if (groups_.ep > 1 && config_.adapter().kind() != config::AdapterConfig::PMOL) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parallel.ep = ", groups_.ep, ": expert parallelism spreads PMoL experts over ranks, and adapter.kind ",
        config::AdapterConfig::Kind_Name(config_.adapter().kind()), " has none; use parallel.ep: 1"));
  }
  PMOL_RETURN_IF_ERROR(MakeDirectories(output_dir_, &created_output_dirs_));

  PMOL_ASSIGN_OR_RETURN(run_, BuildRunComponents(config_, ""));
  PMOL_ASSIGN_OR_RETURN(data_, LoadRunData(config_, run_->model->config().vocab_size, out_));
  if (run_->adapters && run_->adapters->options().has_router()) {
    for (const data::TokenizedPair& p : data_.train.pairs) {
      if (p.preference < run_->num_preferences) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          data_.train_options.sources[p.source].path, ":", p.line, ": preference ", p.preference,
          " has no expert group (adapter has ", run_->num_preferences, " groups)"));
    }
  }
  // One sample stream for the whole world (each step's pairs are split over the ranks
  // by the trainer), so that the data does not depend on the number of ranks.
  sampler_ = std::make_unique<data::Sampler>(data_.train.source_sizes, data_.train.mix_weights,
                                             /*samples_per_epoch=*/0, data_.train_options.shuffle,
                                             config_.seed(), /*rank=*/0, /*world_size=*/1);

  NamedTensors all_params = run_->TrainableParams();
  int64_t trainable = 0;
  for (const auto& [name, t] : all_params) trainable += t.numel();
  all_params.clear();
  PMOL_RETURN_IF_ERROR(SetupExpertParallelism());

  const config::OptimizerConfig& oc = config_.optimizer();
  const int64_t micro = config_.data().micro_batch_size(), ranks = world_->size();
  accumulation_ = oc.grad_accumulation_steps();
  if (config_.data().global_batch_size() > 0) {
    const int64_t global = config_.data().global_batch_size();
    if (global % (micro * ranks) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data.global_batch_size = ", global, " is not a multiple of data.micro_batch_size x ranks = ", micro,
          " x ", ranks, "; choose a micro-batch size and rank count whose product divides it"));
    }
    accumulation_ = static_cast<int32_t>(global / (micro * ranks));
  }
  pairs_per_step_ = micro * accumulation_ * ranks;
  total_steps_ = oc.max_steps() > 0
                     ? oc.max_steps()
                     : static_cast<int64_t>(std::ceil(oc.epochs() * sampler_->epoch_size() /
                                                      static_cast<double>(pairs_per_step_)));
  total_steps_ = std::max<int64_t>(total_steps_, 1);
  schedule_.kind = oc.schedule() == config::OptimizerConfig::CONSTANT ? LrScheduleOptions::kConstant
                   : oc.schedule() == config::OptimizerConfig::LINEAR ? LrScheduleOptions::kLinear
                                                                       : LrScheduleOptions::kCosine;
  schedule_.lr = oc.lr();
  schedule_.warmup_steps = oc.warmup_steps();
  schedule_.total_steps = total_steps_;
  schedule_.min_lr_ratio = oc.min_lr_ratio();
  PMOL_RETURN_IF_ERROR(ValidateLrScheduleOptions(schedule_));

  const AdamWOptions ao = AdamWOptionsFromConfig(oc);
  absl::Status adam = ValidateAdamWOptions(ao);
  if (!adam.ok()) return absl::InvalidArgumentError(absl::StrCat("optimizer.", adam.message()));
  NamedTensors params = run_->TrainableParams(), grads = run_->TrainableGrads();
  dist::ZeroOptions zo;
  zo.stage = config_.parallel().zero_stage();
  zo.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(config_.parallel().bucket_mb() * (1 << 20)));
  // With expert parallelism the experts (lora_A, lora_B) go to their own optimizer over
  // the expert-data-parallel group; the routers stay with the world's.
  NamedTensors replicated[2], replicated_grads[2];  // [0] replicated, [1] experts
  std::vector<bool> decay[2];
  for (size_t i = 0; i < params.size(); ++i) {
    const int part = groups_.ep > 1 && !PmolAdapters::IsRouter(params[i].first) ? 1 : 0;
    replicated[part].push_back(params[i]);
    replicated_grads[part].push_back(grads[i]);
    decay[part].push_back(run_->Decays(params[i].first));
  }
  PMOL_ASSIGN_OR_RETURN(optimizer_, dist::ZeroOptimizer::Create(groups_.data_parallel.get(), replicated[0],
                                                                replicated_grads[0], decay[0], ao, zo));
  if (groups_.ep > 1) {
    PMOL_ASSIGN_OR_RETURN(expert_optimizer_,
                          dist::ZeroOptimizer::Create(groups_.expert_data_parallel.get(), replicated[1],
                                                      replicated_grads[1], decay[1], ao, zo));
  }
  if (config_.parallel().overlap_reduction()) SetupOverlap(replicated);
  store_ = std::make_unique<CheckpointStore>(checkpoint_dir_, config_.checkpoint().keep_last());
  state_.seed = config_.seed();
  state_.world_size = world_->size();
  precompute_ = config_.objective().kind() == config::ObjectiveConfig::DPO &&
                config_.objective().precompute_reference();

  int64_t model_params = 0;
  for (const auto& [name, t] : NamedWeights(run_->model->config(), run_->model->weights())) model_params += t.numel();
  *out_ << absl::StrFormat(
      "model %s: %.2fM parameters; trains %d tensors, %.3fM parameters (%.2f%%)\n",
      config_.model().path(), model_params / 1e6, run_->TrainableParams().size(), trainable / 1e6,
      100.0 * trainable / std::max<int64_t>(model_params, 1));
  if (ranks == 1) {
    *out_ << absl::StrFormat("%d optimizer steps of %d pairs (%d x %d), %d pairs per epoch\n", total_steps_,
                             pairs_per_step_, micro, accumulation_, sampler_->epoch_size());
  } else {
    const std::string layout =
        groups_.ep > 1 ? absl::StrFormat("%d data-parallel x %d expert-parallel", groups_.dp, groups_.ep)
                       : std::string("data-parallel");
    *out_ << absl::StrFormat(
        "%d ranks (%s, ZeRO stage %d); %d optimizer steps of %d pairs (%d x %d x %d ranks), %d "
        "pairs per epoch\n",
        ranks, layout, zo.stage, total_steps_, pairs_per_step_, micro, accumulation_, ranks, sampler_->epoch_size());
  }
  if (groups_.ep > 1) {
    for (int e = 0; e < groups_.ep; ++e) {
      *out_ << absl::StrFormat("expert-parallel rank %d holds experts %s\n", e,
                               absl::StrJoin(placement_.experts_of_rank[e], ","));
    }
  } else if (config_.parallel().preference_aware_sampling()) {
    *out_ << "warning: parallel.preference_aware_sampling has no effect without expert parallelism "
             "(parallel.ep = 1)\n";
  }
  return absl::OkStatus();
}

// Places the expert groups on the expert-parallel ranks (balanced by expert count, then
// by load: each group's share of the training pairs, which the group loss routes to it)
// and keeps this rank's experts.
void Trainer::SetupOverlap(const NamedTensors (&parts)[2]) {
  const int64_t layers = run_->model->config().num_hidden_layers;
  for (int part = 0; part < 2; ++part) {
    final_at_layer_[part].assign(layers + 2, {});
    for (size_t i = 0; i < parts[part].size(); ++i) {
      final_at_layer_[part][GradientsFinalLayer(parts[part][i].first, layers) + 1].push_back(i);
    }
  }
  on_gradients_final_ = [this](int64_t layer) {
    dist::ZeroOptimizer* optimizers[2] = {optimizer_.get(), expert_optimizer_.get()};
    for (int part = 0; part < 2; ++part) {
      if (optimizers[part] == nullptr) continue;
      for (size_t i : final_at_layer_[part][layer + 1]) optimizers[part]->GradientReady(i);
    }
  };
}

absl::Status Trainer::SetupExpertParallelism() {
  if (groups_.ep == 1) return absl::OkStatus();
  const ExpertLayout& layout = run_->adapters->options().layout;
  std::vector<double> load(layout.num_groups(), 0.0);
  for (const data::TokenizedPair& p : data_.train.pairs) {
    if (p.preference >= 0 && p.preference < layout.num_groups()) load[p.preference] += 1;
  }
  absl::StatusOr<dist::ExpertPlacement> placement =
      dist::PlaceExpertGroups(layout.experts_per_group, load, groups_.ep);
  if (!placement.ok()) return absl::InvalidArgumentError(std::string(placement.status().message()));
  placement_ = std::move(*placement);
  ExpertParallelGroup group;
  group.comm = groups_.expert_parallel.get();
  group.experts_of_rank = placement_.experts_of_rank;
  run_->adapters->DistributeExperts(std::move(group));
  return absl::OkStatus();
}

std::vector<CheckpointedOptimizer> Trainer::CheckpointedOptimizers() {
  std::vector<CheckpointedOptimizer> parts = {ReplicatedOptimizerFiles(optimizer_.get(), world_->rank())};
  if (expert_optimizer_) {
    parts.push_back(ExpertOptimizerFiles(expert_optimizer_.get(), groups_.ep_index, groups_.ep, groups_.dp_index));
  }
  return parts;
}

// The trainable tensors as a checkpoint holds them: whole, whatever the expert
// parallelism (a collective over the expert-parallel group when distributed).
NamedTensors Trainer::CheckpointedTrainable() {
  if (!expert_optimizer_) return run_->TrainableParams();
  return run_->adapters->FullParams();
}

void Trainer::StartWindowCounters() {
  window_gradient_wait_seconds_ = 0;
  groups_.data_parallel->TakeDeviceWaitSeconds();  // the window's device waits start at 0
  if (groups_.ep > 1) groups_.expert_data_parallel->TakeDeviceWaitSeconds();
  window_peak_bytes_ = 0;
  window_in_use_bytes_ = 0;
  window_gradient_comm_ = groups_.data_parallel->stats();
  if (groups_.ep > 1) {
    window_expert_comm_ = groups_.expert_parallel->stats();
    window_expert_gradient_comm_ = groups_.expert_data_parallel->stats();
  }
  window_world_comm_ = world_->stats();
}

absl::Status Trainer::PrecomputeReference() {
  if (!precompute_) return absl::OkStatus();
  const Clock::time_point start = Clock::now();
  PMOL_ASSIGN_OR_RETURN(train_reference_,
                        ComputeEvalReference(*run_, data_.train, config_.data().micro_batch_size(),
                                             config_.data().max_length(), data_.pad_id, /*max_pairs=*/0, world_));
  if (!data_.eval.pairs.empty()) {
    PMOL_ASSIGN_OR_RETURN(eval_reference_,
                          ComputeEvalReference(*run_, data_.eval, config_.data().micro_batch_size(),
                                               config_.data().max_length(), data_.pad_id,
                                               config_.eval().max_pairs(), world_));
  }
  *out_ << absl::StrFormat("reference log-probs of %d train + %d eval pairs precomputed in %s\n",
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
  // Rank 0 picks the newest checkpoint that verifies; every rank loads it.
  std::string dir;
  double step = -1;
  absl::Status status = absl::OkStatus();
  if (root_) {
    std::vector<std::string> warnings;
    absl::StatusOr<std::optional<CheckpointInfo>> latest = store_->LatestValid(&warnings);
    for (const std::string& w : warnings) *out_ << "warning: " << w << "\n";
    status = latest.status();
    if (latest.ok() && latest->has_value()) {
      dir = (*latest)->dir;
      step = static_cast<double>((*latest)->step);
    }
  }
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, status));
  dir = world_->BroadcastString(dir, 0);
  world_->Broadcast(&step, 1, DType::kF64, 0);
  if (dir.empty()) return absl::OkStatus();
  NamedTensors params = CheckpointedTrainable();
  absl::StatusOr<TrainerState> loaded =
      LoadTrainCheckpoint(dir, static_cast<int64_t>(step), config_, params, CheckpointedOptimizers());
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, loaded.status()));
  if (expert_optimizer_) run_->adapters->SetFromFullParams(params);  // this rank's experts
  state_ = *loaded;
  PMOL_RETURN_IF_ERROR(sampler_->Restore(state_.sampler));
  resumed_from_ = state_.step;
  last_checkpoint_step_ = state_.step;
  *out_ << "resumed from " << dir << " (step " << state_.step << ")";
  if (state_.world_size != world_->size()) {
    *out_ << absl::StrFormat("; it was written by %d rank(s), this run has %d", state_.world_size, world_->size());
    if (config_.data().global_batch_size() == 0) {
      *out_ << " (without data.global_batch_size the pairs per step change with the rank count)";
    }
  }
  *out_ << "\n";
  state_.world_size = world_->size();
  return absl::OkStatus();
}

absl::Status Trainer::TrainStep() {
  // The step's peak device memory: from what is held at its start (weights, gradients,
  // optimizer state) to the end of its update.
  run_->backend->ResetPeakMemory();
  run_->ZeroGrads();
  optimizer_->BeginStep();
  if (expert_optimizer_) expert_optimizer_->BeginStep();
  // The step's pairs, the same on every rank; this rank takes micro-batches a N + r.
  const int32_t micro = config_.data().micro_batch_size(), ranks = world_->size(), rank = world_->rank();
  std::vector<int64_t> pairs(pairs_per_step_);
  for (int64_t& p : pairs) p = sampler_->Next();
  if (expert_optimizer_ && config_.parallel().preference_aware_sampling()) {
    // Pairs of preference p to the micro-batches of the ranks that hold group p.
    std::vector<int32_t> preference(pairs.size());
    for (size_t i = 0; i < pairs.size(); ++i) preference[i] = data_.train.pairs[pairs[i]].preference;
    const std::vector<int64_t> order =
        dist::PreferenceAwareOrder(preference, micro, ranks, groups_.ep, placement_.home_rank_of_group);
    std::vector<int64_t> drawn = pairs;
    for (size_t i = 0; i < pairs.size(); ++i) pairs[i] = drawn[order[i]];
  }
  const int64_t micro_per_step = static_cast<int64_t>(accumulation_) * ranks;
  std::vector<StepMetrics> done;
  double loss = 0;  // this rank's share of the step's loss
  int64_t tokens = 0;
  for (int32_t a = 0; a < accumulation_; ++a) {
    const int64_t m = static_cast<int64_t>(a) * ranks + rank;
    const std::vector<int64_t> mine(pairs.begin() + m * micro, pairs.begin() + (m + 1) * micro);
    const data::PreferenceBatch batch = TrimPadding(
        data_.train, data::MakePaddedBatch(data_.train, mine, micro, config_.data().max_length(), data_.pad_id),
        data_.pad_id);
    if (run_->adapters) run_->adapters->SetTraining(true, config_.seed(), state_.step * micro_per_step + m);
    ReferencePair cached;
    if (precompute_) cached = CachedReference(train_reference_, batch);
    const bool last = a + 1 == accumulation_;
    if (on_gradients_final_) {
      optimizer_->BeginMicroBatch(last);
      if (expert_optimizer_) expert_optimizer_->BeginMicroBatch(last);
    }
    absl::StatusOr<StepMetrics> metrics =
        run_->step->Run(batch, 1.0 / micro_per_step, precompute_ ? &cached : nullptr, on_gradients_final_);
    // Every rank completes the reductions that the others started during their backward,
    // then all leave together when one failed, before the next collective.
    const Clock::time_point wait_start = Clock::now();
    optimizer_->AfterMicroBatch();
    if (expert_optimizer_) expert_optimizer_->AfterMicroBatch();
    window_gradient_wait_seconds_ += Seconds(wait_start);
    PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, metrics.status()));
    loss += metrics->loss / micro_per_step;  // each micro-batch's loss enters with weight 1/(A N)
    tokens += metrics->tokens;
    done.push_back(std::move(*metrics));
  }
  state_.sampler = sampler_->state();
  if (ranks > 1) {
    std::vector<double> totals = {loss, static_cast<double>(tokens)};
    world_->AllReduceSum(totals);
    loss = totals[0];
    tokens = static_cast<int64_t>(totals[1]);
  }
  double norm = 0;
  const Clock::time_point reduce_start = Clock::now();
  if (expert_optimizer_) {
    // The global norm over the replicated tensors and every expert-parallel rank's experts.
    const double squares = optimizer_->ReduceGradients() +
                           groups_.expert_parallel->AllReduceSum(expert_optimizer_->ReduceGradients());
    norm = std::sqrt(squares);
    optimizer_->ClipToNorm(norm, config_.optimizer().max_grad_norm());
    expert_optimizer_->ClipToNorm(norm, config_.optimizer().max_grad_norm());
  } else {
    norm = optimizer_->ReduceAndClip(config_.optimizer().max_grad_norm());
  }
  window_gradient_wait_seconds_ += Seconds(reduce_start);
  const double lr = LearningRate(schedule_, state_.step);
  if (!std::isfinite(loss) || !std::isfinite(norm)) {
    ++state_.skipped_steps;
    *out_ << absl::StrFormat("warning: step %d skipped: loss %g, gradient norm %g (%d skipped so far)\n",
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
    if (expert_optimizer_) expert_optimizer_->Step(lr);
    for (const StepMetrics& m : done) window_->Add(m);
    window_grad_norm_ += norm;
    ++window_steps_;
  }
  const MemoryStats step_memory = run_->backend->GetMemoryStats();
  window_peak_bytes_ = std::max(window_peak_bytes_, step_memory.peak_in_use_bytes);
  window_in_use_bytes_ = step_memory.in_use_bytes;
  state_.tokens_seen += tokens;
  ++state_.step;
  ++window_all_steps_;

  const bool last = state_.step == total_steps_;
  if (state_.step % config_.logging().every_steps() == 0 || last) {
    const double window_seconds = Seconds(window_start_);
    ProgressFigures f;
    f.step = state_.step;
    f.total_steps = total_steps_;
    f.epoch = state_.sampler.epoch +
              static_cast<double>(state_.sampler.consumed) / std::max<int64_t>(sampler_->epoch_size(), 1);
    window_->MergeAcross(*world_);  // every rank's micro-batches
    EvalResult summary = window_->Finish();
    summary.preference_names = run_->preference_names;
    f.metrics = summary.Named();
    f.lr = lr;
    f.grad_norm = window_steps_ > 0 ? window_grad_norm_ / window_steps_ : norm;
    f.tokens_per_second = window_seconds > 0 ? window_->tokens() / window_seconds : 0;
    // Device memory: the window's peak and the in-use at its end, each the largest over
    // the ranks (the rank closest to running out).
    double memory[2] = {static_cast<double>(window_peak_bytes_), static_cast<double>(window_in_use_bytes_)};
    if (world_->size() > 1) world_->AllReduce(memory, 2, DType::kF64, dist::ReduceOp::kMax);
    f.peak_memory_bytes = memory[0];
    f.elapsed_seconds = Seconds(run_start_);
    const int64_t done = state_.step - run_start_step_;
    f.eta_seconds = done > 0 ? f.elapsed_seconds / done * (total_steps_ - state_.step) : 0;
    *out_ << ProgressLine(f) << std::endl;
    std::map<std::string, double> scalars = f.metrics;
    scalars["lr"] = lr;
    scalars["grad_norm"] = f.grad_norm;
    scalars["epoch"] = f.epoch;
    scalars["tokens_per_second"] = f.tokens_per_second;
    scalars["tokens_seen"] = static_cast<double>(state_.tokens_seen);
    scalars["skipped_steps"] = static_cast<double>(state_.skipped_steps);
    scalars["step_seconds"] = window_seconds / window_all_steps_;
    scalars["memory/peak_bytes"] = memory[0];
    scalars["memory/in_use_bytes"] = memory[1];
    if (world_->size() > 1) {
      // Bytes this rank sent per step (dist/comm.h's ring model): the optimizer's
      // gradient and parameter collectives, and everything else (metrics, agreement).
      const double steps = static_cast<double>(window_all_steps_);
      double gradient_bytes = groups_.data_parallel->stats().total_bytes() - window_gradient_comm_.total_bytes();
      if (groups_.ep > 1) {
        // The experts' gradients and parameters go over the expert-data-parallel group;
        // the routed rows over the expert-parallel group (all-to-all).
        gradient_bytes += groups_.expert_data_parallel->stats().total_bytes() - window_expert_gradient_comm_.total_bytes();
        scalars["comm/expert_all_to_all_bytes_per_step"] =
            (groups_.expert_parallel->stats().all_to_all_bytes - window_expert_comm_.all_to_all_bytes) / steps;
      }
      scalars["comm/gradient_bytes_per_step"] = gradient_bytes / steps;
      // Time spent waiting for gradient reductions once the backward is over: what the
      // overlap with the backward did not hide.
      scalars["comm/gradient_wait_seconds_per_step"] = window_gradient_wait_seconds_ / steps;
      // On GPUs (NCCL) that wait does not block the host: the compute stream stands still
      // instead, for this long (CUDA events around its waits; 0 on CPU).
      double device_wait = groups_.data_parallel->TakeDeviceWaitSeconds();
      if (groups_.ep > 1) device_wait += groups_.expert_data_parallel->TakeDeviceWaitSeconds();
      scalars["comm/gradient_device_wait_seconds_per_step"] = device_wait / steps;
      scalars["comm/other_bytes_per_step"] =
          (world_->stats().total_bytes() - window_world_comm_.total_bytes()) / steps;
    }
    PMOL_RETURN_IF_ERROR(
        dist::AgreeOnStatus(*world_, metrics_ ? metrics_->Write(state_.step, "train", scalars) : absl::OkStatus()));
    window_ = std::make_unique<MetricsAccumulator>(NewWindow());
    window_grad_norm_ = 0;
    window_steps_ = 0;
    window_all_steps_ = 0;
    StartWindowCounters();
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
                      data_.pad_id, config_.eval().max_pairs(), precompute_ ? &eval_reference_ : nullptr, world_));
  const std::map<std::string, double> named = result.Named();
  absl::Status written = metrics_ ? metrics_->Write(state_.step, "eval", named) : absl::OkStatus();
  if (written.ok() && final_eval && root_) written = WriteEvalResult(output_dir_ + "/eval.json", result);
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, written));
  auto get = [&](const char* name) {
    auto it = named.find(name);
    return it == named.end() ? std::nan("") : it->second;
  };
  std::string line = absl::StrFormat("eval at step %d: %d pairs | loss %.4f", state_.step, result.pairs,
                                     get("loss/total"));
  if (result.kind != ObjectiveKind::kSft) {
    absl::StrAppendFormat(&line, " | acc %.3f | margin %.3f", get("rewards/accuracy"), get("rewards/margins"));
  }
  *out_ << line << " | " << FormatDuration(Seconds(start)) << "\n";
  return absl::OkStatus();
}

absl::Status Trainer::Checkpoint() {
  if (last_checkpoint_step_ == state_.step) return absl::OkStatus();
  const Clock::time_point start = Clock::now();
  const NamedTensors trainable = CheckpointedTrainable();
  PMOL_ASSIGN_OR_RETURN(std::string dir, SaveTrainCheckpoint(root_ ? store_.get() : nullptr, *world_, config_,
                                                              state_, trainable, CheckpointedOptimizers()));
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, metrics_ ? metrics_->Flush() : absl::OkStatus()));
  last_checkpoint_step_ = state_.step;
  *out_ << "checkpoint " << dir << " (" << FormatDuration(Seconds(start)) << ")\n";
  return absl::OkStatus();
}

bool Trainer::StopRequested() {
  double stop = options_.stop_requested != nullptr && *options_.stop_requested ? 1 : 0;
  return world_->size() > 1 ? world_->AllReduceMax(stop) > 0 : stop > 0;  // any rank's signal stops all
}

absl::StatusOr<TrainerResult> Trainer::Run() {
  absl::Status setup = Setup();
  // Failed before the first collective: the same on every rank.
  if (groups_made_) setup = dist::AgreeOnStatus(*world_, setup);
  if (!setup.ok()) {
    // Bad input found before anything was written: no empty output folder stays behind.
    RemoveEmptyDirectories(output_dir_, created_output_dirs_);
    return setup;
  }
  PMOL_RETURN_IF_ERROR(PrecomputeReference());  // from the base weights, before a resume
  PMOL_RETURN_IF_ERROR(Resume());
  if (root_) {  // metrics and the effective config: rank 0's
    const std::string jsonl = config_.logging().metrics_file().empty() ? output_dir_ + "/metrics.jsonl"
                                                                        : config_.logging().metrics_file();
    const std::string tensorboard = config_.logging().tensorboard() ? output_dir_ + "/tensorboard" : "";
    absl::StatusOr<std::unique_ptr<MetricsLog>> log = MetricsLog::Open(jsonl, tensorboard, resumed_from_);
    absl::Status status = log.status();
    if (log.ok()) {
      metrics_ = std::move(*log);
      status = WriteFileAtomically(output_dir_ + "/run_config.textproto", {config::EffectiveRunConfigToText(config_)});
    }
    PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, status));
  } else {
    PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, absl::OkStatus()));
  }

  window_ = std::make_unique<MetricsAccumulator>(NewWindow());
  run_start_ = window_start_ = Clock::now();
  run_start_step_ = state_.step;
  StartWindowCounters();
  const int32_t eval_every = config_.eval().every_steps();
  const int32_t checkpoint_every = config_.checkpoint().every_steps();
  while (state_.step < total_steps_) {
    if (StopRequested()) {
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
  if (expert_optimizer_) run_->adapters->CollectExperts();  // rank 0 writes every expert
  absl::Status outputs = absl::OkStatus();
  if (root_) {
    outputs = metrics_->Flush();
    if (outputs.ok()) outputs = WriteRunOutputs(*run_, output_dir_, out_);
  }
  PMOL_RETURN_IF_ERROR(dist::AgreeOnStatus(*world_, outputs));
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
