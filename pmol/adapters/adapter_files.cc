// The adapter folder (tensors + JSON config); see adapter_files.h.
#include "pmol/adapters/adapter_files.h"

#include "nlohmann/json.hpp"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/safetensors.h"

namespace pmol {

absl::Status WriteAdapterFolder(PmolAdapters& adapters, const std::string& dir,
                                const std::string& base_model_path, const NamedTensors& extra) {
  const AdapterOptions& o = adapters.options();
  nlohmann::json config;
  const std::string type = o.kind == AdapterKind::kPmol ? "pmol" : "lora";
  config["adapter_type"] = type;
  config["base_model"] = base_model_path;
  nlohmann::json groups = nlohmann::json::array();
  for (int32_t g = 0; g < o.layout.num_groups(); ++g) {
    groups.push_back({{"name", g < static_cast<int32_t>(o.group_names.size()) ? o.group_names[g] : ""},
                      {"experts", o.layout.experts_per_group[g]}});
  }
  config["groups"] = groups;
  config["empty_experts"] = o.layout.num_empty;
  config["router_slots"] = o.has_router() ? o.layout.num_experts() + o.layout.num_empty : 0;
  config["expert_order"] = "group-major: rows [e*r, (e+1)*r) of lora_A and columns of lora_B are expert e";
  config["rank"] = o.layout.rank;
  config["alpha"] = o.alpha;
  config["lora_dropout"] = o.dropout;
  nlohmann::json targets = nlohmann::json::array();
  for (int m = 0; m < kNumLinearModules; ++m) {
    if (o.targets[m]) targets.push_back(LinearModuleShortName(static_cast<LinearModule>(m)));
  }
  config["target_modules"] = targets;
  config["layers"] = o.layers.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.layers);
  config["router_temperature"] = o.temperature;
  config["top_k"] = o.top_k;
  config["capacity_factor"] = o.capacity_factor;

  NamedTensors tensors = adapters.Params();
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  PMOL_RETURN_IF_ERROR(MakeDirectories(dir));
  PMOL_RETURN_IF_ERROR(WriteSafetensors(dir + "/adapter_model.safetensors", tensors,
                                        {{"format", "pt"}, {"adapter_type", type}}));
  const std::string json = config.dump(2) + "\n";
  return WriteFileAtomically(dir + "/adapter_config.json", {json});
}

}  // namespace pmol
