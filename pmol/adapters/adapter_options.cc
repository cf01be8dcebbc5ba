// AdapterConfig (proto) -> AdapterOptions; see adapter_options.h.
#include "pmol/adapters/adapter_options.h"

#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"
#include "proto/run_config_validation.h"

namespace pmol {

absl::StatusOr<AdapterOptions> AdapterOptionsFromConfig(const config::AdapterConfig& c,
                                                        int64_t num_layers) {
  AdapterOptions o;
  switch (c.kind()) {
    case config::AdapterConfig::PMOL: o.kind = AdapterKind::kPmol; break;
    case config::AdapterConfig::LORA: o.kind = AdapterKind::kLora; break;
    case config::AdapterConfig::FULL: o.kind = AdapterKind::kFull; break;
  }
  o.layout.rank = c.rank();
  if (o.kind == AdapterKind::kPmol) {
    if (c.groups_size() > 0) {
      for (const auto& g : c.groups()) {
        o.layout.experts_per_group.push_back(g.experts());
        o.group_names.push_back(g.name());
      }
    } else {
      o.layout.experts_per_group.assign(c.num_groups(), c.experts_per_group());
      o.group_names.assign(c.num_groups(), "");
    }
    o.layout.num_empty = c.empty_experts();
    if (o.layout.num_groups() < 1)
      return absl::InvalidArgumentError(
          "adapter.num_groups: PMoL needs at least one preference group, got 0");
  } else {
    o.layout.experts_per_group = {1};
    o.layout.num_empty = 0;
  }
  o.alpha = c.alpha();
  o.dropout = c.dropout();
  if (c.target_modules_size() == 0) {
    o.targets.fill(true);
  } else {
    for (int i = 0; i < c.target_modules_size(); ++i) {
      absl::StatusOr<int> m = config::ParseTargetModule(c.target_modules(i));
      if (!m.ok())
        return absl::InvalidArgumentError(absl::StrCat("adapter.target_modules[", i, "]: ",
                                                       std::string(m.status().message())));
      o.targets[*m] = true;
    }
  }
  for (int i = 0; i < c.layers_size(); ++i) {
    if (c.layers(i) < 0 || c.layers(i) >= num_layers)
      return absl::InvalidArgumentError(absl::StrCat("adapter.layers[", i, "]: layer ",
                                                     c.layers(i), " outside the model's ",
                                                     num_layers, " layers"));
    o.layers.push_back(c.layers(i));
  }
  o.temperature = c.router_temperature();
  o.top_k = o.kind == AdapterKind::kPmol ? c.top_k() : 0;
  o.capacity_factor = o.kind == AdapterKind::kPmol ? c.capacity_factor() : 0.0;
  o.router_init_std = c.router_init_std();
  o.lora_init = c.lora_init() == config::AdapterConfig::GAUSSIAN ? LoraInit::kGaussian
                                                                 : LoraInit::kKaimingUniform;
  return o;
}

}  // namespace pmol
