// Module names of the adapter hook; see linear_adapter.h.
#include "pmol/model/linear_adapter.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace pmol {

const char* LinearModuleSuffix(LinearModule m) {
  switch (m) {
    case LinearModule::kQ: return "self_attn.q_proj";
    case LinearModule::kK: return "self_attn.k_proj";
    case LinearModule::kV: return "self_attn.v_proj";
    case LinearModule::kO: return "self_attn.o_proj";
    case LinearModule::kGate: return "mlp.gate_proj";
    case LinearModule::kUp: return "mlp.up_proj";
    case LinearModule::kDown: return "mlp.down_proj";
  }
  return "?";
}

const char* LinearModuleShortName(LinearModule m) {
  const char* suffix = LinearModuleSuffix(m);
  const char* dot = std::strchr(suffix, '.');
  return dot == nullptr ? suffix : dot + 1;
}

std::string LinearModuleName(int64_t layer, LinearModule m) {
  return absl::StrCat("model.layers.", layer, ".", LinearModuleSuffix(m));
}

}  // namespace pmol
