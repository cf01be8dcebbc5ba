// The byte-level alphabet of GPT-2 style BPE: each of the 256 byte values maps to one
// printable Unicode character. Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ')
// map to themselves; the other 68 bytes map, in increasing byte order, to U+0100,
// U+0101, ... (so the space 0x20 becomes 'Ġ' U+0120 and '\n' becomes 'Ċ' U+010A).
#ifndef PMOL_DATA_BYTE_LEVEL_H_
#define PMOL_DATA_BYTE_LEVEL_H_

#include <string>
#include <string_view>

namespace pmol::data {

// The UTF-8 string of the character that stands for `byte`.
const std::string& ByteToUnicode(unsigned char byte);

// Maps every byte of text to its character.
std::string BytesToUnicode(std::string_view text);

// Inverse map: appends the byte for each character of `mapped` to *out. Returns false
// (and appends nothing) when some character is not in the byte alphabet.
bool UnicodeToBytes(std::string_view mapped, std::string* out);

}  // namespace pmol::data

#endif  // PMOL_DATA_BYTE_LEVEL_H_
