// The adapter knobs of a run (proto AdapterConfig, resolved): which kind, the expert
// groups, empty experts, LoRA rank/alpha/dropout, targets and layers, router settings.
// For kLora the layout is one group of one expert and there is no router.
#ifndef PMOL_ADAPTERS_ADAPTER_OPTIONS_H_
#define PMOL_ADAPTERS_ADAPTER_OPTIONS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pmol/adapters/expert_layout.h"
#include "pmol/model/linear_adapter.h"
#include "proto/run_config.pb.h"

namespace pmol {

enum class AdapterKind { kPmol, kLora, kFull };
enum class LoraInit { kKaimingUniform, kGaussian };

struct AdapterOptions {
  AdapterKind kind = AdapterKind::kPmol;
  ExpertLayout layout;                    // groups, empty experts, rank
  std::vector<std::string> group_names;   // one per group (may be empty strings)
  double alpha = 16.0;
  double dropout = 0.0;
  std::array<bool, kNumLinearModules> targets{};  // by LinearModule
  std::vector<int64_t> layers;            // empty: every layer
  double temperature = 1.0;
  int32_t top_k = 0;
  double capacity_factor = 0.0;           // 0: dropless
  double router_init_std = 0.01;
  LoraInit lora_init = LoraInit::kKaimingUniform;

  double scaling() const { return alpha / layout.rank; }
  bool has_router() const { return kind == AdapterKind::kPmol; }
};

// Resolves a validated AdapterConfig (proto/run_config_validation.h). num_layers checks
// `layers` against the model; errors name the field.
absl::StatusOr<AdapterOptions> AdapterOptionsFromConfig(const config::AdapterConfig& config,
                                                        int64_t num_layers);

}  // namespace pmol

#endif  // PMOL_ADAPTERS_ADAPTER_OPTIONS_H_
