// Test helper: runs the independent TFRecord/Event reader tests/oracles/read_tfevents.py
// (pure-Python CRC-32C and hand-decoded protobuf wire format) with /usr/bin/python3 and
// parses its JSON output. The test target needs data = ["//tests/oracles:read_tfevents.py"].
#ifndef PMOL_TESTS_IO_READ_TFEVENTS_ORACLE_H_
#define PMOL_TESTS_IO_READ_TFEVENTS_ORACLE_H_

#include <string>

#include "nlohmann/json.hpp"
#include "tests/launch/pmol_command.h"

namespace pmol {

struct TfEventsOracleResult {
  CommandResult run;    // the reader's exit status and output
  nlohmann::json json;  // its parsed stdout when it exited 0, else null
};

// raw_records: `--records` (each record's length and hex bytes); otherwise decoded Events.
TfEventsOracleResult ReadTfEventsWithOracle(const std::string& path, bool raw_records);

}  // namespace pmol

#endif  // PMOL_TESTS_IO_READ_TFEVENTS_ORACLE_H_
