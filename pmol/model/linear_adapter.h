// The hook through which adapters (pmol/adapters) join the frozen model's linear layers
// without the model knowing them. For a targeted module m of layer l with input x and
// frozen output y0 = x W0^T (+b):
//   forward:   y = y0 + adapter(x)              (Forward adds into y)
//   backward:  dx = dy W0 + d adapter/dx · dy   (Backward adds into dx, and accumulates
//                                                the adapter's own parameter gradients)
// The adapter keeps what its backward needs between the two calls. With activation
// recompute the model calls Forward again for a block just before that block's
// Backward; an adapter must then reproduce the same values (deterministic dropout).
#ifndef PMOL_MODEL_LINEAR_ADAPTER_H_
#define PMOL_MODEL_LINEAR_ADAPTER_H_

#include <cstdint>
#include <string>

#include "pmol/core/tensor.h"

namespace pmol {

// The seven linear modules of a Llama block, in HF order.
enum class LinearModule : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumLinearModules = 7;

// "self_attn.q_proj", ..., "mlp.down_proj".
const char* LinearModuleSuffix(LinearModule m);
// The module's own name, as PEFT's target_modules lists it: "q_proj", ..., "down_proj".
const char* LinearModuleShortName(LinearModule m);
// The HF module name, e.g. "model.layers.3.self_attn.q_proj".
std::string LinearModuleName(int64_t layer, LinearModule m);

class LinearAdapters {
 public:
  virtual ~LinearAdapters() = default;
  virtual bool Adapts(int64_t layer, LinearModule m) const = 0;
  // x [N, in], y [N, out]: y += adapter(x).
  virtual void Forward(int64_t layer, LinearModule m, const Tensor& x, Tensor& y) = 0;
  // dy [N, out], dx [N, in]: dx += (d adapter(x)/dx)^T dy; parameter gradients accumulate.
  virtual void Backward(int64_t layer, LinearModule m, const Tensor& x, const Tensor& dy,
                        Tensor& dx) = 0;
};

}  // namespace pmol

#endif  // PMOL_MODEL_LINEAR_ADAPTER_H_
