// GPT-2 byte <-> character table (see byte_level.h).
#include "pmol/data/byte_level.h"

#include <array>

#include "pmol/data/utf8.h"

namespace pmol::data {
namespace {

struct Tables {
  std::array<std::string, 256> to_unicode;
  std::array<int, 512> to_byte;  // code point (< 512) -> byte, or -1
  Tables() {
    to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                             (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? static_cast<char32_t>(b) : 256 + next++;
      AppendUtf8(cp, &to_unicode[b]);
      to_byte[cp] = b;
    }
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

}  // namespace

const std::string& ByteToUnicode(unsigned char byte) { return GetTables().to_unicode[byte]; }

std::string BytesToUnicode(std::string_view text) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) out += t.to_unicode[c];
  return out;
}

bool UnicodeToBytes(std::string_view mapped, std::string* out) {
  const Tables& t = GetTables();
  std::string bytes;
  bytes.reserve(mapped.size());
  size_t pos = 0;
  while (pos < mapped.size()) {
    const size_t len = ValidUtf8SequenceLength(mapped, pos);
    if (len == 0) return false;
    const char32_t cp = DecodeUtf8At(mapped, pos);
    if (cp >= 512 || t.to_byte[cp] < 0) return false;
    bytes.push_back(static_cast<char>(t.to_byte[cp]));
    pos += len;
  }
  out->append(bytes);
  return true;
}

}  // namespace pmol::data
