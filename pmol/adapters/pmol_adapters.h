// The adapters of a whole model: one PMoL (or LoRA) linear per targeted module of each
// adapted layer, their parameters and gradients under HF-based names
//   <module>.pmol.lora_A  [E*r, d_in]     <module>.pmol.lora_B  [d_out, E*r]
//   <module>.pmol.router  [E + empty, d_in]   (PMoL only)
// with <module> = model.layers.{l}.self_attn.q_proj etc. It plugs into the model as its
// LinearAdapters and keeps, per module, the dense router probabilities of the last
// forward (for the auxiliary losses) and a slot for their gradient (aux_grad), which the
// backward folds into the router's.
// Init: A Kaiming-uniform U(-1/sqrt(d_in), 1/sqrt(d_in)) (PEFT's default) or N(0, 1/r^2)
// (PEFT's "gaussian"), B = 0, router N(0, router_init_std^2); each tensor from its own
// seeded stream named after it. Dropout masks are drawn on the device (Backend::DropoutKeep,
// a counter-based generator) from a key of (seed, step, module), so a recomputed forward
// draws the same mask, and a CPU and a GPU run draw the same masks.
// Expert parallelism (DistributeExperts): each rank keeps only its own experts' A rows
// and B columns (expert_slices.h; Params / Grads are then these local tensors, the
// routers stay whole) and the forward and backward exchange rows with the other ranks
// of the expert-parallel group (pmol_linear_ep.h).
#ifndef PMOL_ADAPTERS_PMOL_ADAPTERS_H_
#define PMOL_ADAPTERS_PMOL_ADAPTERS_H_

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/adapters/adapter_options.h"
#include "pmol/adapters/pmol_linear.h"
#include "pmol/adapters/pmol_linear_ep.h"
#include "pmol/io/hf_config.h"
#include "pmol/model/linear_adapter.h"

namespace pmol {

struct AdaptedModule {
  int64_t layer = 0;
  LinearModule module = LinearModule::kQ;
  std::string name;  // HF module name
  PmolLinearSpec spec;
  PmolLinearParams params, grads;
  PmolLinearCache cache;
  Tensor aux_grad;   // f64 [N, S]: dL/dprobs of the auxiliary losses (undefined: none)
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class PmolAdapters final : public LinearAdapters {
 public:
  // Zero-initialised parameters for every targeted module (kind kPmol or kLora).
  PmolAdapters(const AdapterOptions& options, const LlamaConfig& model, Backend* backend,
               DType dtype);

  const AdapterOptions& options() const { return options_; }
  std::vector<AdaptedModule>& modules() { return modules_; }
  const std::vector<AdaptedModule>& modules() const { return modules_; }

  void Initialize(uint64_t seed);
  // Loads every adapter tensor from a safetensors file (all must be present with their
  // shapes; other tensors are an error naming them, so a mismatched file is caught,
  // except those in `read_by_caller`, e.g. a value head).
  absl::Status Load(const std::string& path, const std::set<std::string>& read_by_caller = {});

  NamedTensors Params() { return Named(false); }
  NamedTensors Grads() { return Named(true); }  // same names as Params
  // True for router tensors (no weight decay by default).
  static bool IsRouter(const std::string& name);
  void ZeroGrads();
  // Drops the forward caches and aux gradients.
  void ClearCaches();

  // Expert parallelism over `group` (PMoL only): keeps this rank's experts of every
  // module and drops the others (and their gradients). Call before an optimizer takes
  // views of Params / Grads.
  void DistributeExperts(ExpertParallelGroup group);
  bool expert_parallel() const { return ep_.comm != nullptr; }
  const ExpertParallelGroup& expert_parallel_group() const { return ep_; }
  // Every adapter tensor whole, as one process holds it (a collective over the
  // expert-parallel group when distributed; else the live tensors).
  NamedTensors FullParams();
  // Sets the parameters from whole tensors (names and shapes of FullParams), copying
  // this rank's experts into the live tensors.
  void SetFromFullParams(const NamedTensors& full);
  // Ends expert parallelism: every rank holds every expert again (a collective).
  void CollectExperts();

  // Dropout on (training) with masks for this step; off for evaluation.
  void SetTraining(bool training, uint64_t seed, int64_t step);

  bool Adapts(int64_t layer, LinearModule m) const override;
  void Forward(int64_t layer, LinearModule m, const Tensor& x, Tensor& y) override;
  void Backward(int64_t layer, LinearModule m, const Tensor& x, const Tensor& dy,
                Tensor& dx) override;

 private:
  NamedTensors Named(bool grads);
  AdaptedModule* Find(int64_t layer, LinearModule m);
  Tensor DropoutKeep(const AdaptedModule& am, int64_t rows) const;

  AdapterOptions options_;
  Backend* backend_;
  DType dtype_;
  std::vector<AdaptedModule> modules_;
  std::vector<int32_t> index_;  // [layer * 7 + module] -> index in modules_, or -1
  bool training_ = false;
  uint64_t dropout_seed_ = 0;
  ExpertParallelGroup ep_;  // comm == nullptr: every expert here
  int64_t dropout_step_ = 0;
};

}  // namespace pmol

#endif  // PMOL_ADAPTERS_PMOL_ADAPTERS_H_
