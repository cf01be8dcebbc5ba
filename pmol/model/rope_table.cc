// RoPE frequency and angle tables; see rope_table.h.
#include "pmol/model/rope_table.h"

#include <cmath>

namespace pmol {

std::vector<double> RopeInverseFrequencies(const LlamaConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> inv(half);
  for (int64_t j = 0; j < half; ++j) {
    inv[j] = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * j) / c.head_dim);
  }
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::kLinear) {
    for (double& f : inv) f /= rs.factor;
  } else if (rs.type == RopeScaling::Type::kLlama3) {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
        continue;
      }
      const double s = (old_len / wavelen - rs.low_freq_factor) /
                       (rs.high_freq_factor - rs.low_freq_factor);
      f = (1.0 - s) * f / rs.factor + s * f;
    }
  }
  return inv;
}

RopeTable MakeRopeTable(const LlamaConfig& c, int64_t positions, Backend* backend, DType dtype) {
  const std::vector<double> inv = RopeInverseFrequencies(c);
  const int64_t half = static_cast<int64_t>(inv.size());
  std::vector<double> cos(positions * half), sin(positions * half);
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t j = 0; j < half; ++j) {
      // HF computes the angle in f32 (positions x inv_freq); the product in double is the
      // exact value that f32 rounding approximates.
      const double angle = static_cast<double>(p) * inv[j];
      cos[p * half + j] = std::cos(angle);
      sin[p * half + j] = std::sin(angle);
    }
  }
  RopeTable t;
  t.positions = positions;
  t.cos = Tensor::FromHost(cos.data(), {positions, half}, DType::kF64, backend).ConvertTo(dtype);
  t.sin = Tensor::FromHost(sin.data(), {positions, half}, DType::kF64, backend).ConvertTo(dtype);
  return t;
}

}  // namespace pmol
