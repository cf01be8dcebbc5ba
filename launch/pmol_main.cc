// The `pmol` command: `pmol <command> [--flag=value ...]`. Dispatches to the commands
// listed in commands.h; an error from a command is printed as "pmol <command>: <message>" and
// exits 1; an unknown command or flag exits 2.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/commands.h"

namespace {

// The first argument that gflags would reject as an unknown flag, or "" when there is none.
// gflags reports an unknown flag by exiting 1 itself, which would make a usage error look
// like bad input, so flags are checked here first. Follows gflags' syntax: "-name" or
// "--name", "=value" or the value as the next argument for a non-bool flag, "--noname" for
// a bool, and "--" ending the flags.
std::string FirstUnknownFlag(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    const size_t start = arg[1] == '-' ? 2 : 1;
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(start, eq == std::string::npos ? std::string::npos : eq - start);
    gflags::CommandLineFlagInfo info;
    if (gflags::GetCommandLineFlagInfo(name.c_str(), &info)) {
      if (eq == std::string::npos && info.type != "bool") ++i;  // the value is the next argument
      continue;
    }
    if (name.rfind("no", 0) == 0 && eq == std::string::npos &&
        gflags::GetCommandLineFlagInfo(name.substr(2).c_str(), &info) && info.type == "bool") {
      continue;
    }
    return arg;
  }
  return "";
}

void PrintUsage(const std::vector<pmol::Command>& commands) {
  std::fprintf(stderr, "usage: pmol <command> [--flag=value ...]\n\ncommands:\n");
  for (const pmol::Command& c : commands) std::fprintf(stderr, "  %-16s %s\n", c.name, c.summary);
  std::fprintf(stderr, "\n`pmol <command> --help` lists a command's flags.\n");
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<pmol::Command> commands = pmol::AllCommands();
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0) {
    PrintUsage(commands);
    return argc < 2 ? 2 : 0;
  }
  const pmol::Command* command = nullptr;
  for (const pmol::Command& c : commands) {
    if (std::strcmp(argv[1], c.name) == 0) command = &c;
  }
  if (command == nullptr) {
    std::fprintf(stderr, "pmol: unknown command '%s'\n\n", argv[1]);
    PrintUsage(commands);
    return 2;
  }
  std::string program = std::string("pmol ") + command->name;
  gflags::SetUsageMessage(std::string(command->summary));
  // Drop the command word so gflags sees only flags, and accept --hf-config as well as
  // --hf_config (gflags names use underscores).
  std::vector<std::string> normalized;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0) {
      const size_t end = std::min(arg.find('='), arg.size());
      for (size_t j = 2; j < end; ++j) {
        if (arg[j] == '-') arg[j] = '_';
      }
    }
    normalized.push_back(std::move(arg));
  }
  // A repeatable flag (--set) reaches its command as one value, the occurrences joined
  // with '\x1f' (gflags itself keeps only the last).
  std::vector<std::string> sets, rest;
  for (size_t i = 0; i < normalized.size(); ++i) {
    if (normalized[i].rfind("--set=", 0) == 0) {
      sets.push_back(normalized[i].substr(6));
    } else if (normalized[i] == "--set" && i + 1 < normalized.size()) {
      sets.push_back(normalized[++i]);
    } else {
      rest.push_back(normalized[i]);
    }
  }
  if (!sets.empty()) {
    std::string joined = "--set=";
    for (size_t i = 0; i < sets.size(); ++i) joined += (i ? "\x1f" : "") + sets[i];
    rest.push_back(joined);
    normalized = std::move(rest);
  }
  const std::string unknown = FirstUnknownFlag(normalized);
  if (!unknown.empty()) {
    std::fprintf(stderr, "%s: unknown flag '%s' (`%s --help` lists the flags)\n", program.c_str(),
                 unknown.c_str(), program.c_str());
    return 2;
  }
  std::vector<char*> args;
  args.push_back(program.data());
  for (std::string& arg : normalized) args.push_back(arg.data());
  int n = static_cast<int>(args.size());
  char** argv2 = args.data();
  gflags::ParseCommandLineFlags(&n, &argv2, /*remove_flags=*/true);
  if (n > 1) {
    std::fprintf(stderr, "%s: unexpected argument '%s'\n", program.c_str(), argv2[1]);
    return 2;
  }
  absl::Status status = command->run();
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
