// Folding a LoRA adapter into the base weights, as PEFT's merge_and_unload: for every
// adapted linear module, W <- W + (alpha / r) * B A (B [d_out, r], A [r, d_in]), so that
// the merged model computes, without adapters, what the adapted model computes in
// evaluation (dropout off). PMoL adapters cannot be merged (their router mixes experts
// per token); asking is an error.
#ifndef PMOL_ADAPTERS_LORA_MERGE_H_
#define PMOL_ADAPTERS_LORA_MERGE_H_

#include "absl/status/status.h"
#include "pmol/adapters/pmol_adapters.h"
#include "pmol/model/llama_weights.h"

namespace pmol {

// `weights` must be the weights the adapters were trained on (same config, backend and
// dtype); they are changed in place.
absl::Status MergeLoraIntoWeights(const PmolAdapters& adapters, LlamaWeights& weights);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_LORA_MERGE_H_
