// Validation of a RunConfig (proto/run_config.proto): value ranges, enumerated strings
// and the agreements between sections (PMoL groups vs data.preference_names, top_k vs
// router slots). An error is InvalidArgument whose message starts with the dotted path
// of the offending field, e.g. "adapter.rank: must be >= 1, got -1". Paths to files
// (model.path, data sources) are not required here: each command checks what it needs.
#ifndef PMOL_PROTO_RUN_CONFIG_VALIDATION_H_
#define PMOL_PROTO_RUN_CONFIG_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/run_config.pb.h"

namespace pmol::config {

// The adapted linear modules of a decoder block, in the order ParseTargetModule numbers them.
inline constexpr int kNumTargetModules = 7;
inline constexpr const char* kTargetModuleNames[kNumTargetModules] = {
    "q", "k", "v", "o", "gate", "up", "down"};

// 0..6 for q, k, v, o, gate, up, down; the HF names q_proj, ..., down_proj are accepted
// too. InvalidArgument naming the accepted spellings otherwise.
absl::StatusOr<int> ParseTargetModule(const std::string& name);

// OK, or InvalidArgument for the first offending field (message starts with its path).
absl::Status ValidateRunConfig(const RunConfig& c);

}  // namespace pmol::config

#endif  // PMOL_PROTO_RUN_CONFIG_VALIDATION_H_
