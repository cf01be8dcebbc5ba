// UTF-8 helpers for the tokenizer and the data pipeline: validation (RFC 3629:
// shortest form, no surrogates, at most U+10FFFF), code-point iteration, encoding,
// and lossy decoding that replaces each maximal invalid subsequence with U+FFFD
// (the WHATWG / Unicode "substitution of maximal subparts" rule, as Rust's
// String::from_utf8_lossy and JavaScript's TextDecoder do).
#ifndef PMOL_DATA_UTF8_H_
#define PMOL_DATA_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pmol::data {

// Length in bytes of the valid UTF-8 sequence starting at text[pos], or 0 when the
// bytes there are not a valid sequence (or pos is at the end).
size_t ValidUtf8SequenceLength(std::string_view text, size_t pos);

// True when the whole text is valid UTF-8. On failure, *error_offset (if not null)
// receives the byte offset of the first invalid byte.
bool IsValidUtf8(std::string_view text, size_t* error_offset = nullptr);

// Length of the UTF-8 character starting at text[pos] in valid text (1 for an
// invalid lead byte, so that loops always advance).
size_t Utf8CharLength(std::string_view text, size_t pos);

// Decodes the code point at text[pos] of valid UTF-8 text.
char32_t DecodeUtf8At(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of a code point.
void AppendUtf8(char32_t code_point, std::string* out);

// Returns text with every maximal invalid subsequence replaced by U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

}  // namespace pmol::data

#endif  // PMOL_DATA_UTF8_H_
