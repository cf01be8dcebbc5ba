// A `pmol` subcommand: its name, a one-line summary and its entry point. Each command
// lives in its own file under launch/ and defines its own gflags; pmol_main.cc lists
// them. Run returns the process exit code (0 ok, 1 bad input or failure, 2 usage).
#ifndef PMOL_LAUNCH_COMMAND_H_
#define PMOL_LAUNCH_COMMAND_H_

#include "absl/status/status.h"

namespace pmol {

struct Command {
  const char* name;
  const char* summary;
  absl::Status (*run)();  // flags are parsed before run is called
};

}  // namespace pmol

#endif  // PMOL_LAUNCH_COMMAND_H_
