// `pmol init-model --hf-config=config.json --out=DIR --seed=N [--dtype=f32|bf16]`
// Writes DIR/config.json (the given file, unchanged) and DIR/model.safetensors with a
// random init: matrices and embeddings N(0, 0.02^2), norms 1, biases 0; deterministic
// for the seed (each tensor has its own stream, named after the tensor).
#include <string>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/common_flags.h"
#include "pmol/core/status.h"
#include "pmol/io/atomic_file.h"
#include "pmol/io/hf_config.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_weights.h"

DEFINE_string(hf_config, "", "init-model: a Hugging Face config.json (llama, qwen2, mistral)");
DEFINE_string(dtype, "f32", "init-model: stored dtype (f32 | bf16); forward: compute dtype (f32 | f64)");

namespace pmol {
namespace {

absl::Status RunInitModel() {
  if (FLAGS_hf_config.empty()) return absl::InvalidArgumentError("--hf-config is required");
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out (a directory) is required");
  DType dtype;
  if (FLAGS_dtype == "f32") {
    dtype = DType::kF32;
  } else if (FLAGS_dtype == "bf16") {
    dtype = DType::kBF16;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--dtype is '", FLAGS_dtype, "'; expected f32 or bf16"));
  }
  PMOL_ASSIGN_OR_RETURN(LlamaConfig config, ReadHfConfig(FLAGS_hf_config));
  PMOL_ASSIGN_OR_RETURN(Backend * cpu, GetBackend(DeviceType::kCpu, FLAGS_threads));
  LlamaWeights weights = InitLlamaWeights(config, static_cast<uint64_t>(FLAGS_seed), 0.02, cpu, dtype);
  PMOL_RETURN_IF_ERROR(MakeDirectories(FLAGS_out));
  PMOL_RETURN_IF_ERROR(WriteSafetensors(absl::StrCat(FLAGS_out, "/model.safetensors"),
                                        NamedWeights(config, weights), {{"format", "pt"}}));
  PMOL_RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(FLAGS_out, "/config.json"), {config.json}));
  int64_t params = 0;
  ForEachWeight(config, weights, [&](const WeightSlot& s) { params += NumElements(s.shape); });
  std::printf("wrote %s/model.safetensors: %lld parameters (%s), seed %d\n", FLAGS_out.c_str(),
              static_cast<long long>(params), FLAGS_dtype.c_str(), FLAGS_seed);
  return absl::OkStatus();
}

}  // namespace

extern const Command kInitModelCommand = {
    "init-model", "write a randomly initialised Llama-family model from an HF config.json",
    &RunInitModel};

}  // namespace pmol
