// RoPE angle tables: for position p and pair j < d/2, angle = p * inv_freq_j with
//   inv_freq_j = theta^(-2j/d)
// and the config's scaling: linear divides inv_freq by `factor`; llama3 (HF
// _compute_llama3_parameters) keeps high frequencies (wavelength < L/high_freq_factor),
// divides low ones (wavelength > L/low_freq_factor) by `factor`, and blends in between with
// s = (L/wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor),
// inv = (1-s) inv/factor + s inv, where L = original_max_position_embeddings.
// Angles are computed in double; tables hold cos and sin [positions, d/2].
#ifndef PMOL_MODEL_ROPE_TABLE_H_
#define PMOL_MODEL_ROPE_TABLE_H_

#include <vector>

#include "pmol/core/tensor.h"
#include "pmol/io/hf_config.h"

namespace pmol {

std::vector<double> RopeInverseFrequencies(const LlamaConfig& config);

struct RopeTable {
  Tensor cos;  // [positions, head_dim/2]
  Tensor sin;
  int64_t positions = 0;
};

RopeTable MakeRopeTable(const LlamaConfig& config, int64_t positions, Backend* backend, DType dtype);

}  // namespace pmol

#endif  // PMOL_MODEL_ROPE_TABLE_H_
