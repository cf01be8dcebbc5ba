// A peer's result line; see peer_process.h.
#include "benchmarks/peer_process.h"

#include <cstdio>

namespace pmol::bench {

nlohmann::json RunPeerJson(const std::string& command, std::string* error) {
  std::string output;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");  // its errors into the row
  if (pipe == nullptr) {
    *error = "could not start: " + command;
    return nullptr;
  }
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  if (status != 0) {
    *error = "FAILED (exit status " + std::to_string(status) + "): " + output;
    return nullptr;
  }
  // The last line that starts with '{' (the peer may print notes before it).
  size_t end = output.size();
  while (end > 0) {
    const size_t start = output.rfind('\n', end - 1);
    const size_t line_start = start == std::string::npos ? 0 : start + 1;
    const std::string line = output.substr(line_start, end - line_start);
    if (!line.empty() && line[0] == '{') {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object()) return j;
    }
    if (start == std::string::npos) break;
    end = start;
  }
  *error = "FAILED (no result line): " + output;
  return nullptr;
}

}  // namespace pmol::bench
