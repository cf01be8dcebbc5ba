// W += (alpha / r) B A per adapted module; see lora_merge.h.
#include "pmol/adapters/lora_merge.h"

#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"

namespace pmol {
namespace {

LinearWeights& ModuleWeights(LayerWeights& layer, LinearModule m) {
  switch (m) {
    case LinearModule::kQ: return layer.q;
    case LinearModule::kK: return layer.k;
    case LinearModule::kV: return layer.v;
    case LinearModule::kO: return layer.o;
    case LinearModule::kGate: return layer.gate;
    case LinearModule::kUp: return layer.up;
    case LinearModule::kDown: return layer.down;
  }
  PMOL_CHECK(false);
  return layer.q;
}

}  // namespace

absl::Status MergeLoraIntoWeights(const PmolAdapters& adapters, LlamaWeights& weights) {
  if (adapters.options().kind != AdapterKind::kLora) {
    return absl::InvalidArgumentError(
        "adapter.kind: only a LoRA adapter can be merged into the base weights (PMoL's router "
        "mixes its experts per token)");
  }
  for (const AdaptedModule& am : adapters.modules()) {
    PMOL_CHECK(am.layer < static_cast<int64_t>(weights.layers.size()));
    Tensor& w = ModuleWeights(weights.layers[am.layer], am.module).weight;
    const Tensor& a = am.params.lora_A;  // [r, d_in]
    const Tensor& b = am.params.lora_B;  // [d_out, r]
    PMOL_CHECK(w.shape() == Shape({am.spec.d_out, am.spec.d_in}));
    PMOL_CHECK(a.dtype() == w.dtype() && b.dtype() == w.dtype());
    const int64_t r = a.shape()[0];
    w.backend()->Gemm(w.dtype(), false, false, am.spec.d_out, am.spec.d_in, r, am.spec.scaling,
                      b.data(), r, a.data(), am.spec.d_in, 1.0, w.data(), am.spec.d_in);
  }
  return absl::OkStatus();
}

}  // namespace pmol
