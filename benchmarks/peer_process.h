// Runs a benchmark's peer (a PyTorch script) as a child process and reads its result: the
// last line of its standard output that parses as a JSON object.
#ifndef PMOL_BENCHMARKS_PEER_PROCESS_H_
#define PMOL_BENCHMARKS_PEER_PROCESS_H_

#include <string>

#include "nlohmann/json.hpp"

namespace pmol::bench {

// Runs `command` through the shell, its standard error merged into its output. On success returns the JSON object; otherwise a null
// value, with *error saying why (the exit status or no result line, and the output).
nlohmann::json RunPeerJson(const std::string& command, std::string* error);

}  // namespace pmol::bench

#endif  // PMOL_BENCHMARKS_PEER_PROCESS_H_
