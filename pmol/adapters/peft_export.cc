// PEFT adapter export; see peft_export.h.
#include "pmol/adapters/peft_export.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"

namespace pmol {

std::string PeftTensorName(const std::string& pmol_name) {
  std::string name = pmol_name;
  for (const char* part : {"lora_A", "lora_B"}) {
    const std::string suffix = absl::StrCat(".pmol.", part);
    if (absl::EndsWith(name, suffix)) {
      name = absl::StrCat(name.substr(0, name.size() - suffix.size()), ".", part, ".weight");
      break;
    }
  }
  return "base_model.model." + name;
}

absl::Status ExportPeftAdapter(PmolAdapters& adapters, const std::string& dir,
                               const std::string& base_model_path) {
  const AdapterOptions& o = adapters.options();
  if (o.kind != AdapterKind::kLora)
    return absl::InvalidArgumentError(
        "adapter.kind: only a LORA baseline has a PEFT form (PMoL has several experts and a "
        "router per module)");
  nlohmann::json config;
  config["peft_type"] = "LORA";
  config["task_type"] = "CAUSAL_LM";
  config["base_model_name_or_path"] = base_model_path;
  config["r"] = o.layout.rank;
  config["lora_alpha"] = o.alpha;
  config["lora_dropout"] = o.dropout;
  config["bias"] = "none";
  config["fan_in_fan_out"] = false;
  config["inference_mode"] = true;
  config["init_lora_weights"] = true;
  config["use_rslora"] = false;
  config["use_dora"] = false;
  config["modules_to_save"] = nullptr;
  config["revision"] = nullptr;
  nlohmann::json targets = nlohmann::json::array();
  for (int m = 0; m < kNumLinearModules; ++m)
    if (o.targets[m]) targets.push_back(LinearModuleShortName(static_cast<LinearModule>(m)));
  config["target_modules"] = targets;
  if (o.layers.empty()) {
    config["layers_to_transform"] = nullptr;
  } else {
    config["layers_to_transform"] = o.layers;
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, tensor] : adapters.Params()) tensors.push_back({PeftTensorName(name), tensor});

  PMOL_RETURN_IF_ERROR(MakeDirectories(dir));
  PMOL_RETURN_IF_ERROR(WriteSafetensors(dir + "/adapter_model.safetensors", tensors,
                                        {{"format", "pt"}}));
  const std::string json = config.dump(2) + "\n";
  return WriteFileAtomically(dir + "/adapter_config.json", {json});
}

}  // namespace pmol
