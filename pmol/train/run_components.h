// The parts of a training run built from its RunConfig, shared by `pmol grads` and
// `pmol train`: backend and dtype, the frozen model, the adapters (PMoL / LoRA) or the
// full-fine-tuning gradients and frozen reference copy, the reward value head, and the
// step that computes losses and gradients. Trainable tensors are listed by name in one
// place (TrainableParams / TrainableGrads, same order) for optimisers and checkpoints.
#ifndef PMOL_TRAIN_RUN_COMPONENTS_H_
#define PMOL_TRAIN_RUN_COMPONENTS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/adapters/pmol_adapters.h"
#include "pmol/model/llama_model.h"
#include "pmol/optim/adamw.h"
#include "pmol/train/preference_step.h"
#include "proto/run_config.pb.h"

namespace pmol {

struct RunComponents {
  config::RunConfig config;
  Backend* backend = nullptr;
  DType dtype = DType::kF32;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<PmolAdapters> adapters;    // PMoL, LoRA
  std::unique_ptr<LlamaWeights> full_grads;  // full fine-tuning
  std::unique_ptr<LlamaModel> reference;     // full fine-tuning + DPO: frozen copy
  std::unique_ptr<ValueHead> value_head;     // reward modelling
  std::unique_ptr<PreferenceStep> step;
  int32_t num_preferences = 1;
  std::vector<std::string> preference_names;

  NamedTensors TrainableParams();
  NamedTensors TrainableGrads();
  // Whether weight decay applies (not to routers unless optimizer.decay_routers; never
  // to norms and biases under full fine-tuning).
  bool Decays(const std::string& name) const;
  void ZeroGrads();
};

// Builds a run from a validated config. `adapter_path` (may be empty) loads adapter
// tensors (and score.weight for reward modelling) instead of the fresh init.
// AdamW's options from the optimizer config (not validated).
AdamWOptions AdamWOptionsFromConfig(const config::OptimizerConfig& oc);

absl::StatusOr<std::unique_ptr<RunComponents>> BuildRunComponents(const config::RunConfig& config,
                                                                  const std::string& adapter_path);

}  // namespace pmol

#endif  // PMOL_TRAIN_RUN_COMPONENTS_H_
