// Reading and writing RunConfig (proto/run_config.proto) in protobuf text format.
// Parse errors name the source, the 1-based line and column and the parser's message
// ("run.textproto:3:9: ..."); an unknown field is an error that names it. Reading does
// not validate: call ValidateRunConfig (run_config_validation.h) on the result.
#ifndef PMOL_PROTO_RUN_CONFIG_IO_H_
#define PMOL_PROTO_RUN_CONFIG_IO_H_

#include <string>

#include "absl/status/statusor.h"
#include "proto/run_config.pb.h"

namespace pmol::config {

// Reads a text-format file. NotFound (naming the path) when it does not exist,
// InvalidArgument for a parse error.
absl::StatusOr<RunConfig> ReadRunConfig(const std::string& path);

// Parses text-format `text`; `source_name` (a path, "<flags>", ...) prefixes errors.
absl::StatusOr<RunConfig> ParseRunConfig(const std::string& text,
                                         const std::string& source_name);

// Text format of the fields that are set (defaults left out); ParseRunConfig of the
// result gives back an equal message.
std::string RunConfigToText(const RunConfig& config);

// The effective config: every singular field of every section, set or not, with its
// value (the default where unset; strings with no declared default, such as paths, are
// shown only when set). For logs and checkpoints, so that a run records what
// it used even if a default changes later.
std::string EffectiveRunConfigToText(const RunConfig& config);
// Applies one command-line override "field.path=value" (`pmol train --set=...`): the path
// names a singular field through singular sub-messages (optimizer.lr, adapter.kind,
// model.path); the value is written as in text format (numbers, true/false, enum names;
// strings with or without quotes). A repeated scalar field is replaced by the value, or
// by a list "[a, b]". Errors name the override and the part that is wrong; `config` is
// unchanged on error.
absl::Status ApplyOverride(const std::string& assignment, RunConfig* config);

}  // namespace pmol::config

#endif  // PMOL_PROTO_RUN_CONFIG_IO_H_
