// The folders a finished run writes; see run_outputs.h.
#include "pmol/train/run_outputs.h"

#include "pmol/adapters/adapter_files.h"
#include "pmol/adapters/lora_merge.h"
#include "pmol/adapters/peft_export.h"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"

namespace pmol {
namespace {

constexpr char kValueHeadName[] = "score.weight";

absl::Status WriteModelFolder(const LlamaConfig& config, LlamaWeights& weights, const ValueHead* head,
                              const std::string& dir) {
  NamedTensors tensors = NamedWeights(config, weights);
  if (head != nullptr) tensors.push_back({kValueHeadName, head->weight});
  PMOL_RETURN_IF_ERROR(MakeDirectories(dir));
  PMOL_RETURN_IF_ERROR(WriteSafetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}}));
  return WriteFileAtomically(dir + "/config.json", {config.json});
}

}  // namespace

absl::Status WriteRunOutputs(RunComponents& run, const std::string& output_dir, std::ostream* log) {
  const std::string base = run.config.model().path();
  const LlamaConfig& lc = run.model->config();
  if (run.adapters) {
    NamedTensors extra;
    if (run.value_head) extra.push_back({kValueHeadName, run.value_head->weight});
    PMOL_RETURN_IF_ERROR(WriteAdapterFolder(*run.adapters, output_dir + "/adapter", base, extra));
    if (log) *log << "wrote " << output_dir << "/adapter (adapter_model.safetensors, adapter_config.json)\n";
  }
  if (run.adapters && run.adapters->options().kind == AdapterKind::kLora) {
    PMOL_RETURN_IF_ERROR(ExportPeftAdapter(*run.adapters, output_dir + "/peft", base));
    if (log) *log << "wrote " << output_dir << "/peft (PEFT LoRA adapter)\n";
    // Merge into a copy: the live weights stay the base the adapter was trained on.
    LlamaWeights merged = CloneWeights(lc, run.model->weights());
    PMOL_RETURN_IF_ERROR(MergeLoraIntoWeights(*run.adapters, merged));
    PMOL_RETURN_IF_ERROR(WriteModelFolder(lc, merged, run.value_head.get(), output_dir + "/merged"));
    if (log) *log << "wrote " << output_dir << "/merged (HF model folder, LoRA merged)\n";
  }
  if (run.full_grads) {
    PMOL_RETURN_IF_ERROR(WriteModelFolder(lc, run.model->weights(), run.value_head.get(), output_dir + "/merged"));
    if (log) *log << "wrote " << output_dir << "/merged (HF model folder)\n";
  }
  return absl::OkStatus();
}

}  // namespace pmol
