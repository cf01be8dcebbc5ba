// Building a run's components from its config; see run_components.h.
#include "pmol/train/run_components.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "pmol/adapters/adapter_options.h"
#include "pmol/core/rng.h"
#include "pmol/core/status.h"
#include "pmol/io/safetensors.h"

namespace pmol {
namespace {

constexpr char kValueHeadName[] = "score.weight";

// f32 and f64 compute as they are; bf16 is mixed precision (kernels/backend.h): bf16
// weights and activations, f32 statistics, f32 gradients of whatever is trained (the
// adapters, or every weight under full fine-tuning) and f32 optimizer state (AdamW keeps
// f32 master copies of the bf16 weights it trains).
absl::StatusOr<DType> ComputeDType(const config::ModelConfig& m) {
  DType dt;
  if (!ParseDTypeName(absl::AsciiStrToUpper(m.dtype()), &dt) || dt == DType::kI32)
    return absl::InvalidArgumentError(absl::StrCat("model.dtype: unknown dtype '", m.dtype(), "'"));
  if (dt == DType::kF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model.dtype: '", m.dtype(), "': f16 compute is not supported (it needs loss scaling); ",
        "use bf16 for mixed precision, or f32; an f16 checkpoint is read and converted on load"));
  }
  return dt;
}

}  // namespace

NamedTensors RunComponents::TrainableParams() {
  NamedTensors out;
  if (adapters) out = adapters->Params();
  if (full_grads) out = NamedWeights(model->config(), model->weights());
  if (value_head) out.push_back({kValueHeadName, value_head->weight});
  return out;
}

NamedTensors RunComponents::TrainableGrads() {
  NamedTensors out;
  if (adapters) out = adapters->Grads();
  if (full_grads) out = NamedWeights(model->config(), *full_grads);
  if (value_head) out.push_back({kValueHeadName, value_head->grad});
  return out;
}

bool RunComponents::Decays(const std::string& name) const {
  if (PmolAdapters::IsRouter(name)) return config.optimizer().decay_routers();
  if (absl::StrContains(name, "norm") || absl::EndsWith(name, ".bias")) return false;
  return true;
}

void RunComponents::ZeroGrads() {
  for (auto& [name, grad] : TrainableGrads()) grad.SetZero();
}

AdamWOptions AdamWOptionsFromConfig(const config::OptimizerConfig& oc) {
  AdamWOptions ao;
  ao.lr = oc.lr();
  ao.beta1 = oc.beta1();
  ao.beta2 = oc.beta2();
  ao.eps = oc.eps();
  ao.weight_decay = oc.weight_decay();
  return ao;
}

absl::StatusOr<std::unique_ptr<RunComponents>> BuildRunComponents(const config::RunConfig& config,
                                                                  const std::string& adapter_path) {
  auto run = std::make_unique<RunComponents>();
  run->config = config;
  const config::ModelConfig& mc = config.model();
  if (mc.path().empty()) return absl::InvalidArgumentError("model.path: required (a HF model folder)");
  PMOL_ASSIGN_OR_RETURN(DeviceType device, ParseDevice(mc.device()));
  PMOL_ASSIGN_OR_RETURN(run->backend, GetBackend(device, mc.threads()));
  PMOL_ASSIGN_OR_RETURN(run->dtype, ComputeDType(mc));
  PMOL_ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load(mc.path(), run->backend, run->dtype));
  run->model = std::make_unique<LlamaModel>(std::move(model));
  run->model->set_recompute_activations(mc.recompute_activations());
  const LlamaConfig lc = run->model->config();  // a copy: full fine-tuning replaces the model

  PMOL_ASSIGN_OR_RETURN(AdapterOptions adapter,
                        AdapterOptionsFromConfig(config.adapter(), lc.num_hidden_layers));
  const config::ObjectiveConfig& objective = config.objective();
  for (const std::string& name : config.data().preference_names()) run->preference_names.push_back(name);
  if (adapter.kind == AdapterKind::kPmol) {
    run->num_preferences = adapter.layout.num_groups();
    if (run->preference_names.empty()) run->preference_names = adapter.group_names;
  } else {
    run->num_preferences = std::max<int32_t>(
        {1, static_cast<int32_t>(run->preference_names.size()), config.adapter().num_groups(),
         static_cast<int32_t>(config.adapter().groups_size())});
  }

  const bool reward = objective.kind() == config::ObjectiveConfig::REWARD;
  if (reward) {
    run->value_head = std::make_unique<ValueHead>();
    Rng rng = Rng::ForStream(config.seed(), kValueHeadName);
    std::vector<double> w(lc.hidden_size);
    for (double& v : w) v = 0.02 * rng.Normal();  // HF's default initializer_range
    run->value_head->weight =
        Tensor::FromHost(w.data(), {1, lc.hidden_size}, DType::kF64, run->backend)
            .ConvertTo(AccumDType(run->dtype));
    run->value_head->grad = Tensor::Zeros({1, lc.hidden_size}, AccumDType(run->dtype), run->backend);
  }

  if (adapter.kind == AdapterKind::kFull) {
    if (!adapter_path.empty())
      return absl::InvalidArgumentError(
          "--adapter: adapter.kind is FULL (full fine-tuning), which has no adapter tensors");
    // Loaded weights may be read-only views of the mapped file: train a private copy.
    run->model = std::make_unique<LlamaModel>(lc, CloneWeights(lc, run->model->weights()), run->backend,
                                              run->dtype);
    run->model->set_recompute_activations(mc.recompute_activations());
    run->full_grads =
        std::make_unique<LlamaWeights>(ZerosLikeWeights(lc, run->backend, AccumDType(run->dtype)));
    if (objective.kind() == config::ObjectiveConfig::DPO && !objective.precompute_reference()) {
      // The one case with a second copy: full fine-tuning moves the base itself.
      run->reference = std::make_unique<LlamaModel>(lc, CloneWeights(lc, run->model->weights()),
                                                    run->backend, run->dtype);
    }
  } else {
    run->adapters = std::make_unique<PmolAdapters>(adapter, lc, run->backend, run->dtype);
    if (adapter_path.empty()) {
      run->adapters->Initialize(config.seed());
    } else {
      std::set<std::string> extra;
      if (reward) extra.insert(kValueHeadName);
      PMOL_RETURN_IF_ERROR(run->adapters->Load(adapter_path, extra));
    }
  }
  if (reward && !adapter_path.empty()) {
    PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::Open(adapter_path));
    if (file->Find(kValueHeadName) != nullptr) {
      if (file->Find(kValueHeadName)->shape != Shape{1, lc.hidden_size})
        return absl::InvalidArgumentError(absl::StrCat(adapter_path, ": ", kValueHeadName,
                                                       " must have shape [1, ", lc.hidden_size, "]"));
      PMOL_ASSIGN_OR_RETURN(Tensor w, file->Load(kValueHeadName, run->backend, AccumDType(run->dtype)));
      run->value_head->weight = w.Clone();
    }
  }

  run->step = std::make_unique<PreferenceStep>(
      StepOptionsFromConfig(objective, run->num_preferences), run->model.get(),
      run->adapters.get(), run->full_grads.get(), run->reference.get(), run->value_head.get());
  return run;
}

}  // namespace pmol
