// Runs tests/oracles/read_tfevents.py; see read_tfevents_oracle.h.
#include "tests/io/read_tfevents_oracle.h"

#include <vector>

namespace pmol {

TfEventsOracleResult ReadTfEventsWithOracle(const std::string& path, bool raw_records) {
  std::vector<std::string> argv = {"/usr/bin/python3", "tests/oracles/read_tfevents.py"};
  if (raw_records) argv.push_back("--records");
  argv.push_back(path);
  TfEventsOracleResult result;
  result.run = RunProgram(argv);
  if (result.run.term_signal == 0 && result.run.exit_code == 0) {
    result.json = nlohmann::json::parse(result.run.stdout_text, nullptr, false);
    if (result.json.is_discarded()) {
      ADD_FAILURE() << "reader printed no JSON\n" << result.run.Describe();
      result.json = nullptr;
    }
  }
  return result;
}

}  // namespace pmol
