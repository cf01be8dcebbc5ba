// `pmol export-peft --config=run.textproto --adapter=adapter.safetensors --out=DIR`:
// writes a LoRA baseline's adapter in PEFT's format (adapter_config.json +
// adapter_model.safetensors), loadable by PeftModel.from_pretrained(base, DIR).
#include <string>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/common_flags.h"
#include "pmol/adapters/peft_export.h"
#include "pmol/core/status.h"
#include "pmol/train/run_components.h"
#include "proto/run_config_io.h"
#include "proto/run_config_validation.h"

DECLARE_string(config);
DECLARE_string(adapter);

namespace pmol {
namespace {

absl::Status RunExportPeft() {
  if (FLAGS_config.empty()) return absl::InvalidArgumentError("--config (a run config, text proto) is required");
  if (FLAGS_adapter.empty()) return absl::InvalidArgumentError("--adapter (adapter tensors, safetensors) is required");
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out (a folder) is required");
  PMOL_ASSIGN_OR_RETURN(config::RunConfig config, config::ReadRunConfig(FLAGS_config));
  absl::Status valid = config::ValidateRunConfig(config);
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat(FLAGS_config, ": ", valid.message()));
  if (config.adapter().kind() != config::AdapterConfig::LORA)
    return absl::InvalidArgumentError(absl::StrCat(
        FLAGS_config, ": adapter.kind: only a LORA baseline has a PEFT form"));
  PMOL_ASSIGN_OR_RETURN(std::unique_ptr<RunComponents> run, BuildRunComponents(config, FLAGS_adapter));
  PMOL_RETURN_IF_ERROR(ExportPeftAdapter(*run->adapters, FLAGS_out, config.model().path()));
  std::printf("wrote %s/adapter_config.json and %s/adapter_model.safetensors (%zu tensors)\n",
              FLAGS_out.c_str(), FLAGS_out.c_str(), run->adapters->Params().size());
  return absl::OkStatus();
}

}  // namespace

extern const Command kExportPeftCommand = {
    "export-peft", "a LoRA baseline's adapter in PEFT's format", &RunExportPeft};

}  // namespace pmol
