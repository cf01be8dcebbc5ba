// Line-oriented encode / decode (see tokenize_tool.h).
#include "pmol/data/tokenize_tool.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"

namespace pmol::data {

absl::Status TokenizeLines(const Tokenizer& tokenizer, std::istream& in, std::ostream& out,
                           bool decode, bool add_special_tokens, const std::string& source) {
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!decode) {
      const std::vector<int32_t> ids = tokenizer.Encode(line, add_special_tokens);
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i > 0) out << ' ';
        out << ids[i];
      }
      out << '\n';
      continue;
    }
    std::istringstream words(line);
    std::string word;
    std::vector<int32_t> ids;
    while (words >> word) {
      errno = 0;
      char* end = nullptr;
      const long long value = std::strtoll(word.c_str(), &end, 10);
      if (end == word.c_str() || *end != '\0' || errno != 0 || value < 0 ||
          value >= tokenizer.vocab_size() || !tokenizer.IdToToken(static_cast<int32_t>(value))) {
        return absl::InvalidArgumentError(absl::StrCat(
            source, ":", line_number, ": '", word, "' is not a token id of ", tokenizer.name()));
      }
      ids.push_back(static_cast<int32_t>(value));
    }
    out << tokenizer.Decode(ids, /*skip_special_tokens=*/false) << '\n';
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat(source, ": read error"));
  return absl::OkStatus();
}

}  // namespace pmol::data
