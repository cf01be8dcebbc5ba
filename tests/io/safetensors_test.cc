// safetensors and model-folder I/O: round trips (every dtype, zero-copy views, sharded
// folders equal to single files) and every kind of bad file named by the issue
// (missing, truncated, header lying about sizes or offsets, unknown dtype), each of which
// must be a clear error naming the file and tensor, never a crash.
#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/io/safetensors.h"
#include "pmol/io/weight_files.h"

namespace pmol {
namespace {

std::string Tmp(const std::string& name) {
  const char* t = std::getenv("TEST_TMPDIR");
  return std::string(t ? t : "/tmp") + "/" + name;
}

Backend* Cpu() { return GetBackend(DeviceType::kCpu).value(); }

// Writes a raw safetensors file with the given header text and data bytes.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

std::string ErrorOf(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  return f.ok() ? "" : std::string(f.status().message());
}

TEST(Safetensors, RoundTripEveryDtypeAndMetadata) {
  std::vector<float> v = {1.5f, -2.25f, 3.0f, 0.0f, 0.0078125f, -7.0f};
  Tensor f32 = Tensor::FromHost(v.data(), {2, 3}, DType::kF32, Cpu());
  std::vector<int32_t> ids = {7, -1, 42};
  Tensor i32 = Tensor::FromHost(ids.data(), {3}, DType::kI32, Cpu());
  const std::string path = Tmp("round.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", f32}, {"b", f32.ConvertTo(DType::kBF16)},
                                      {"c", f32.ConvertTo(DType::kF16)}, {"d", f32.ConvertTo(DType::kF64)},
                                      {"ids", i32}},
                               {{"format", "pt"}})
                  .ok());
  auto file = SafetensorsFile::Open(path).value();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  for (const char* name : {"a", "b", "c", "d"}) {
    Tensor t = file->Load(name, Cpu(), DType::kF32).value();
    EXPECT_EQ(t.shape(), (Shape{2, 3}));
    EXPECT_EQ(t.ToFloats(), v) << name;  // all values are exact in bf16 and f16
  }
  Tensor back = file->Load("ids", Cpu(), DType::kI32).value();
  EXPECT_EQ(std::vector<int32_t>(back.data_as<int32_t>(), back.data_as<int32_t>() + 3), ids);
  // Stored dtype == wanted dtype on the CPU: a view into the mapping, not a copy.
  const char* base = static_cast<const char*>(file->Load("a", Cpu(), DType::kF32)->data());
  const char* again = static_cast<const char*>(file->Load("a", Cpu(), DType::kF32)->data());
  EXPECT_EQ(base, again);
  EXPECT_FALSE(file->Load("ids", Cpu(), DType::kF32).ok());  // no int -> float reinterpretation
  EXPECT_FALSE(file->Load("nope", Cpu(), DType::kF32).ok());
}

TEST(Safetensors, WriteIsAtomicAndLeavesNoTemporaryFile) {
  const std::string path = Tmp("atomic.safetensors");
  std::vector<float> v(1000, 1.0f);
  ASSERT_TRUE(WriteSafetensors(path, {{"x", Tensor::FromHost(v.data(), {1000}, DType::kF32, Cpu())}}).ok());
  EXPECT_EQ(std::fopen((path + ".tmp." + std::to_string(getpid())).c_str(), "r"), nullptr);
  EXPECT_FALSE(WriteSafetensors(Tmp("no/such/dir/x.safetensors"), {}).ok());
}

TEST(Safetensors, BadFilesAreClearErrors) {
  EXPECT_NE(ErrorOf(Tmp("missing.safetensors")).find("missing.safetensors"), std::string::npos);

  const std::string good_header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string data(16, '\0');

  WriteRaw(Tmp("ok.safetensors"), good_header, data);
  EXPECT_EQ(ErrorOf(Tmp("ok.safetensors")), "");

  WriteRaw(Tmp("truncated.safetensors"), good_header, data.substr(0, 10));
  std::string e = ErrorOf(Tmp("truncated.safetensors"));
  EXPECT_NE(e.find("truncated.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("'w'"), std::string::npos) << e;

  {  // header length field larger than the file
    std::ofstream out(Tmp("short.safetensors"), std::ios::binary);
    out << std::string("\xff\xff\x00\x00\x00\x00\x00\x00", 8) << "{}";
  }
  EXPECT_NE(ErrorOf(Tmp("short.safetensors")).find("header length"), std::string::npos);
  {
    std::ofstream out(Tmp("tiny.safetensors"), std::ios::binary);
    out << "abc";
  }
  EXPECT_NE(ErrorOf(Tmp("tiny.safetensors")).find("too short"), std::string::npos);

  WriteRaw(Tmp("size_lie.safetensors"), R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", data);
  e = ErrorOf(Tmp("size_lie.safetensors"));
  EXPECT_NE(e.find("need 24"), std::string::npos) << e;

  WriteRaw(Tmp("offset_lie.safetensors"), R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}})", data);
  e = ErrorOf(Tmp("offset_lie.safetensors"));
  EXPECT_NE(e.find("past the data"), std::string::npos) << e;

  WriteRaw(Tmp("reversed.safetensors"), R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", data);
  EXPECT_NE(ErrorOf(Tmp("reversed.safetensors")).find("reversed"), std::string::npos);

  WriteRaw(Tmp("dtype.safetensors"), R"({"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", data);
  e = ErrorOf(Tmp("dtype.safetensors"));
  EXPECT_NE(e.find("unsupported dtype 'Q4'"), std::string::npos) << e;

  WriteRaw(Tmp("json.safetensors"), R"({"w":{"dtype":"F32",)", data);
  EXPECT_NE(ErrorOf(Tmp("json.safetensors")).find("not a JSON object"), std::string::npos);

  WriteRaw(Tmp("shape.safetensors"), R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,16]}})", data);
  EXPECT_NE(ErrorOf(Tmp("shape.safetensors")).find("shape"), std::string::npos);

  WriteRaw(Tmp("overflow.safetensors"),
           R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", data);
  EXPECT_NE(ErrorOf(Tmp("overflow.safetensors")).find("overflow"), std::string::npos);
}

TEST(WeightFiles, ShardedFolderMatchesAndIndexErrorsNameTheIndex) {
  const std::string dir = Tmp("sharded");
  ::mkdir(dir.c_str(), 0755);
  std::vector<float> a = {1, 2, 3}, b = {4, 5};
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00001-of-00002.safetensors",
                               {{"a", Tensor::FromHost(a.data(), {3}, DType::kF32, Cpu())}}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/model-00002-of-00002.safetensors",
                               {{"b", Tensor::FromHost(b.data(), {2}, DType::kF32, Cpu())}}).ok());
  auto write_index = [&](const nlohmann::json& map) {
    std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json{{"metadata", {}}, {"weight_map", map}}.dump();
  };
  write_index({{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}});
  auto files = WeightFiles::Open(dir);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->FileOf("b")->Load("b", Cpu(), DType::kF32)->ToFloats(), b);
  EXPECT_EQ(files->Names(), (std::vector<std::string>{"a", "b"}));

  write_index({{"a", "model-00002-of-00002.safetensors"}});
  auto bad = WeightFiles::Open(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("model.safetensors.index.json"), std::string::npos);
  EXPECT_NE(std::string(bad.status().message()).find("'a'"), std::string::npos);

  write_index({{"a", "../escape.safetensors"}});
  EXPECT_FALSE(WeightFiles::Open(dir).ok());
  write_index({{"a", "gone.safetensors"}});
  bad = WeightFiles::Open(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("gone.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace pmol
