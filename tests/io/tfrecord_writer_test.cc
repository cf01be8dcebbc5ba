// TfRecordWriter against an independent reader (tests/oracles/read_tfevents.py: its own
// table CRC-32C and masking): records of lengths 0, 1, 100 and 70000 read back intact
// with both masked CRCs checked; a flipped byte in a length, a data byte or a stored CRC
// makes the reader report a CRC mismatch (so the check can fail); Open truncates; errors
// name the path.
#include "pmol/io/tfrecord_writer.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/io/read_tfevents_oracle.h"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

std::string Hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex.push_back(kDigits[c >> 4]);
    hex.push_back(kDigits[c & 15]);
  }
  return hex;
}

std::vector<std::string> TestRecords() {
  std::mt19937 rng(11);
  std::vector<std::string> records;
  for (size_t n : {0, 1, 100, 70000}) {
    std::string r(n, '\0');
    for (char& c : r) c = static_cast<char>(rng());
    records.push_back(r);
  }
  return records;
}

std::string WriteRecords(const std::string& path, const std::vector<std::string>& records) {
  absl::StatusOr<std::unique_ptr<TfRecordWriter>> writer = TfRecordWriter::Open(path);
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return "";
  for (const std::string& r : records) EXPECT_TRUE((*writer)->Write(r).ok());
  EXPECT_TRUE((*writer)->Flush().ok());
  return ReadFile(path);
}

TEST(TfRecordWriterTest, IndependentReaderReadsEveryRecordBack) {
  const std::string path = FreshDir(CurrentTestName()) + "/records.tfrecord";
  const std::vector<std::string> records = TestRecords();
  const std::string bytes = WriteRecords(path, records);
  size_t expected_size = 0;
  for (const std::string& r : records) expected_size += 8 + 4 + r.size() + 4;
  EXPECT_EQ(bytes.size(), expected_size);

  TfEventsOracleResult read = ReadTfEventsWithOracle(path, /*raw_records=*/true);
  ASSERT_TRUE(ExitedWith(read.run, 0));
  ASSERT_TRUE(read.json.is_array());
  ASSERT_EQ(read.json.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(read.json[i]["length"].get<size_t>(), records[i].size()) << i;
    EXPECT_EQ(read.json[i]["hex"].get<std::string>(), Hex(records[i])) << i;
  }
}

TEST(TfRecordWriterTest, ByteFormatOfAnEmptyRecord) {
  // Header: 8 zero bytes, then the masked CRC; footer: masked CRC of nothing (0 ->
  // rot 0 + 0xA282EAD8), little-endian.
  const std::string footer = TfRecordFooter("");
  EXPECT_EQ(footer, std::string("\xD8\xEA\x82\xA2", 4));
  const std::string header = TfRecordHeader("");
  ASSERT_EQ(header.size(), 12u);
  EXPECT_EQ(header.substr(0, 8), std::string(8, '\0'));
  const std::string long_header = TfRecordHeader(std::string(70000, 'x'));
  EXPECT_EQ(long_header.substr(0, 8), std::string("\x70\x11\x01\0\0\0\0\0", 8));  // 70000
}

TEST(TfRecordWriterTest, CorruptedBytesMakeTheReaderReportCrcErrors) {
  const std::string dir = FreshDir(CurrentTestName());
  const std::string good = WriteRecords(dir + "/good.tfrecord", TestRecords());
  // Offsets into the file: record 0 (empty) spans [0, 16), record 1 (1 byte) [16, 33),
  // record 2 (100 bytes) [33, 149).
  struct Case {
    size_t offset;
    std::string message;
  };
  const std::vector<Case> cases = {
      {33 + 3, "record 2 at offset 33: length CRC mismatch"},           // a length byte
      {33 + 12 + 50, "record 2 at offset 33: data CRC mismatch"},       // a data byte
      {33 + 12 + 100 + 1, "record 2 at offset 33: data CRC mismatch"},  // the data CRC
      {16 + 9, "record 1 at offset 16: length CRC mismatch"},           // the length CRC
  };
  for (const Case& c : cases) {
    std::string bad = good;
    bad[c.offset] = static_cast<char>(bad[c.offset] ^ 0x04);
    const std::string path = dir + "/bad_" + std::to_string(c.offset) + ".tfrecord";
    WriteFile(path, bad);
    TfEventsOracleResult read = ReadTfEventsWithOracle(path, /*raw_records=*/true);
    EXPECT_TRUE(ExitedWith(read.run, 1)) << c.offset;
    EXPECT_TRUE(StderrMentions(read.run, {c.message})) << c.offset;
  }
}

TEST(TfRecordWriterTest, OpenTruncatesAnExistingFile) {
  const std::string path = FreshDir(CurrentTestName()) + "/records.tfrecord";
  WriteFile(path, std::string(1000, 'z'));
  WriteRecords(path, {"only"});
  TfEventsOracleResult read = ReadTfEventsWithOracle(path, /*raw_records=*/true);
  ASSERT_TRUE(ExitedWith(read.run, 0));
  ASSERT_EQ(read.json.size(), 1u);
  EXPECT_EQ(read.json[0]["hex"], Hex("only"));
}

TEST(TfRecordWriterTest, UnwritablePathIsAnErrorNamingIt) {
  const std::string dir = FreshDir(CurrentTestName());
  WriteFile(dir + "/a_file", "x");
  for (const std::string& path :
       {dir + "/a_file/records.tfrecord", dir + "/missing/records.tfrecord"}) {
    absl::StatusOr<std::unique_ptr<TfRecordWriter>> writer = TfRecordWriter::Open(path);
    ASSERT_FALSE(writer.ok()) << path;
    EXPECT_NE(std::string(writer.status().message()).find(path), std::string::npos)
        << writer.status();
  }
}

}  // namespace
}  // namespace pmol
