// CRC-32C against the test vectors of RFC 3720 (appendix B.4) and "123456789", the
// hardware and table paths against each other on random lengths and offsets, and
// incremental extension against the one-shot value.
#include "pmol/io/crc32c.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace pmol {
namespace {

TEST(Crc32cTest, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(descending), 0x113FDB5Cu);
  EXPECT_EQ(Crc32c(""), 0u);
}

TEST(Crc32cTest, HardwareAndTableAgreeAndExtendIsIncremental) {
  std::mt19937 rng(7);
  std::string bytes(4099, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  for (size_t begin : {0, 1, 3, 8}) {
    for (size_t size : {0, 1, 7, 8, 9, 63, 1000, 4090}) {
      const char* p = bytes.data() + begin;
      const uint32_t whole = Crc32cExtend(0, p, size);
      EXPECT_EQ(whole, Crc32cExtendPortable(0, p, size)) << begin << " " << size;
      const size_t cut = size / 3;
      EXPECT_EQ(whole, Crc32cExtend(Crc32cExtend(0, p, cut), p + cut, size - cut));
    }
  }
}

TEST(Crc32cTest, MaskIsTensorFlowsRotateAndAdd) {
  // masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8, as tensorflow/core/lib/hash/crc32c.h
  EXPECT_EQ(MaskCrc32c(0u), 0xA282EAD8u);
  EXPECT_EQ(MaskCrc32c(0xE3069283u), static_cast<uint32_t>(((0xE3069283u >> 15) |
                                                            (0xE3069283u << 17)) +
                                                           0xA282EAD8u));
}

}  // namespace
}  // namespace pmol
