// A trained adapter as a folder a user takes away:
//   DIR/adapter_model.safetensors  every adapter tensor under pmol's names
//       (<module>.pmol.lora_A [E*r, d_in], <module>.pmol.lora_B [d_out, E*r],
//        <module>.pmol.router [S, d_in]) plus any `extra` tensors (e.g. a value head)
//   DIR/adapter_config.json        {"adapter_type": "pmol" | "lora", "base_model": path,
//       "groups": [{"name", "experts"}], "empty_experts", "rank", "alpha",
//       "lora_dropout", "target_modules": [q_proj, ...], "layers": [...] (null: all),
//       "router_temperature", "top_k", "capacity_factor", "router_slots", "expert_order"}:
//       enough to read
//       the tensors without pmol (experts are stacked in group order, rank rows each;
//       router slot s < experts is expert s, the rest are the empty experts).
// `pmol train --adapter=DIR/adapter_model.safetensors` (or grads/export-peft) reloads it.
#ifndef PMOL_ADAPTERS_ADAPTER_FILES_H_
#define PMOL_ADAPTERS_ADAPTER_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "pmol/adapters/pmol_adapters.h"

namespace pmol {

absl::Status WriteAdapterFolder(PmolAdapters& adapters, const std::string& dir,
                                const std::string& base_model_path, const NamedTensors& extra = {});

}  // namespace pmol

#endif  // PMOL_ADAPTERS_ADAPTER_FILES_H_
