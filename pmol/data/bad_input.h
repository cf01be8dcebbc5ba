// Bad-input bookkeeping for dataset loading: the reasons an input line can be
// rejected, and a report that counts them per file and reason, keeps the first
// message of each, and prints a summary ("skipped 12 of 1000 pairs: ...") before
// training. Under the fail policy the loader stops at the first bad line instead,
// with an error reading "FILE:LINE: <reason>: <detail>".
#ifndef PMOL_DATA_BAD_INPUT_H_
#define PMOL_DATA_BAD_INPUT_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>

namespace pmol::data {

enum class BadInputReason {
  kInvalidUtf8,
  kInvalidJson,
  kMissingField,      // a required field is absent or has the wrong type
  kEmptyResponse,     // chosen or rejected has no non-whitespace text
  kIdenticalResponses,
  kUnknownPreference,
  kOverlong,          // does not fit max_length (and responses may not be cut)
  kMalformed,         // structure problems: bad roles, HH prompt mismatch, ...
};

const char* BadInputReasonName(BadInputReason reason);

class BadInputReport {
 public:
  void Record(const std::string& file, int64_t line, BadInputReason reason,
              const std::string& detail);
  int64_t total() const { return total_; }
  int64_t count(BadInputReason reason) const;
  // "FILE:LINE: reason: detail" of the first bad line of that reason, or "".
  std::string first_message(BadInputReason reason) const;
  // Human-readable summary; `kept` is the number of pairs that were kept.
  std::string Summary(int64_t kept) const;

 private:
  int64_t total_ = 0;
  std::map<std::pair<std::string, BadInputReason>, int64_t> counts_;
  std::map<BadInputReason, std::string> first_;
};

std::string FormatBadInput(const std::string& file, int64_t line, BadInputReason reason,
                           const std::string& detail);

}  // namespace pmol::data

#endif  // PMOL_DATA_BAD_INPUT_H_
