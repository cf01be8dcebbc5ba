// CRC-32C (Castagnoli; reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF),
// the checksum of checkpoint manifests and of TFRecord framing, and the "masked" form
// TFRecord stores: rot_right(crc, 15) + 0xA282EAD8 (mod 2^32).
// Computed with the SSE4.2 crc32 instruction when the CPU has it, else by a table;
// both give the same value (checked by tests/io/crc32c_test against RFC 3720 vectors).
#ifndef PMOL_IO_CRC32C_H_
#define PMOL_IO_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pmol {

// Extends `crc` (the value returned for the preceding bytes; 0 to start) by `size` bytes.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(std::string_view bytes) {
  return Crc32cExtend(0, bytes.data(), bytes.size());
}

// TFRecord's masked CRC.
inline uint32_t MaskCrc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u; }

// The table path only (for tests that compare the two paths).
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t size);

}  // namespace pmol

#endif  // PMOL_IO_CRC32C_H_
