// Export of a LoRA baseline in PEFT's adapter format, so `PeftModel.from_pretrained(base,
// dir)` loads it:
//   dir/adapter_config.json       peft_type LORA, task_type CAUSAL_LM, r, lora_alpha,
//                                 lora_dropout, target_modules (q_proj, ...),
//                                 layers_to_transform, bias "none", base model path
//   dir/adapter_model.safetensors base_model.model.<module>.lora_A.weight [r, d_in]
//                                 base_model.model.<module>.lora_B.weight [d_out, r]
// PEFT computes y = W0 x + (lora_alpha / r) B A dropout(x), the same as pmol's LoRA.
// PMoL adapters (several experts and a router) have no PEFT form; asking is an error.
#ifndef PMOL_ADAPTERS_PEFT_EXPORT_H_
#define PMOL_ADAPTERS_PEFT_EXPORT_H_

#include <string>

#include "absl/status/status.h"
#include "pmol/adapters/pmol_adapters.h"

namespace pmol {

// The PEFT tensor name of a pmol LoRA tensor name (<module>.pmol.lora_A -> ...).
std::string PeftTensorName(const std::string& pmol_name);

absl::Status ExportPeftAdapter(PmolAdapters& adapters, const std::string& dir,
                               const std::string& base_model_path);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_PEFT_EXPORT_H_
