// The list of `pmol` subcommands. Each is defined in its own launch/<name>_command.cc.
#ifndef PMOL_LAUNCH_COMMANDS_H_
#define PMOL_LAUNCH_COMMANDS_H_

#include <vector>

#include "launch/command.h"

namespace pmol {

extern const Command kInitModelCommand;
extern const Command kForwardCommand;
extern const Command kTokenizeCommand;
extern const Command kMakeDemoDataCommand;
extern const Command kGradsCommand;
extern const Command kExportPeftCommand;
extern const Command kTrainCommand;
extern const Command kReportCommand;

inline std::vector<Command> AllCommands() {
  return {kInitModelCommand, kForwardCommand,    kTokenizeCommand, kMakeDemoDataCommand,
          kGradsCommand,     kExportPeftCommand, kTrainCommand,    kReportCommand};
}

}  // namespace pmol

#endif  // PMOL_LAUNCH_COMMANDS_H_
