// What a finished run leaves in OUTPUT_DIR for its users:
//   adapter/   PMoL or LoRA: adapter_model.safetensors + adapter_config.json
//              (pmol/adapters/adapter_files.h; with score.weight for reward models)
//   peft/      LoRA: the same adapter in PEFT's format (adapter_config.json +
//              adapter_model.safetensors), for PeftModel.from_pretrained
//   merged/    LoRA and full fine-tuning: a Hugging Face model folder (config.json +
//              model.safetensors) with the adapter folded in (W + alpha/r B A) or the
//              trained weights, loadable by `pmol` or transformers' from_pretrained;
//              reward models add score.weight (LlamaForSequenceClassification's head)
// Every file is written atomically.
#ifndef PMOL_TRAIN_RUN_OUTPUTS_H_
#define PMOL_TRAIN_RUN_OUTPUTS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "pmol/train/run_components.h"

namespace pmol {

// `log` (may be null) gets one line per folder written.
absl::Status WriteRunOutputs(RunComponents& run, const std::string& output_dir, std::ostream* log);

}  // namespace pmol

#endif  // PMOL_TRAIN_RUN_OUTPUTS_H_
