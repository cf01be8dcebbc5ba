// Decoders of `tokenizer.json` ("decoder" field): turn a list of token strings back
// into text. Each step maps a token list to a token list, as in HF tokenizers:
//   ByteLevel   every token's characters back to bytes (a token with a character
//               outside the byte alphabet, e.g. an added token, contributes its own
//               UTF-8 bytes); the bytes are joined and decoded lossily (U+FFFD)
//   ByteFallback  runs of "<0xXX>" tokens become the string of their bytes (U+FFFD per
//               byte when those bytes are not valid UTF-8)
//   Replace{pattern: String, content}, Fuse (join all), Strip{content, start, stop}
//   Metaspace{replacement, prepend_scheme | add_prefix_space}  replacement -> " ",
//               and the leading space of the first token dropped when one was prepended
//   Sequence{decoders}
// Without a decoder, tokens are joined as they are.
#ifndef PMOL_DATA_DECODER_H_
#define PMOL_DATA_DECODER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace pmol::data {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const nlohmann::json& j,
                                                      const std::string& where);

}  // namespace pmol::data

#endif  // PMOL_DATA_DECODER_H_
