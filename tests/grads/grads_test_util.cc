// See grads_test_util.h.
#include "tests/grads/grads_test_util.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "pmol/core/rng.h"
#include "pmol/core/tensor.h"
#include "pmol/io/safetensors.h"

namespace pmol::grads_test {

std::string TmpRoot() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

ProcessResult RunProcess(const std::vector<std::string>& args) {
  ProcessResult r;
  static_cast<CommandResult&>(r) = RunProgram(args);
  return r;
}

Json BatchJson(const std::vector<Pair>& pairs) {
  Json list = Json::array();
  for (const Pair& p : pairs) {
    list.push_back({{"prompt", p.prompt},
                    {"chosen", p.chosen},
                    {"rejected", p.rejected},
                    {"preference", p.preference}});
  }
  return {{"pairs", list}};
}

std::vector<Pair> RandomPairs(int n, int vocab, int num_preferences, uint64_t seed) {
  Rng rng(seed);
  auto ids = [&](int len) {
    std::vector<int32_t> v;
    for (int i = 0; i < len; ++i) v.push_back(static_cast<int32_t>(rng.NextU64() % vocab));
    return v;
  };
  std::vector<Pair> pairs;
  for (int i = 0; i < n; ++i) {
    Pair p;
    p.prompt = ids(1 + (i * 3 + 1) % 5);
    p.chosen = ids(1 + (i * 2 + 3) % 6);
    p.rejected = ids(1 + (i * 5 + 1) % 6);
    if (p.rejected.size() == p.chosen.size()) p.rejected.push_back(3);
    p.preference = i % num_preferences;
    pairs.push_back(std::move(p));
  }
  return pairs;
}

std::map<std::string, Stored> ReadAll(const std::string& path) {
  std::map<std::string, Stored> out;
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  Backend* cpu = GetBackend(DeviceType::kCpu, 1).value();
  for (const SafetensorsEntry& e : (*file)->entries()) {
    Stored s;
    s.dtype = DTypeName(e.dtype);
    s.shape = e.shape;
    auto t = (*file)->Load(e.name, cpu, DType::kF64);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) s.values = t->ToDoubles();
    out[e.name] = std::move(s);
  }
  return out;
}

void WriteTensors(const std::string& path, const std::vector<Named>& tensors, bool f32) {
  Backend* cpu = GetBackend(DeviceType::kCpu, 1).value();
  std::vector<std::pair<std::string, Tensor>> list;
  for (const Named& n : tensors) {
    Tensor t = Tensor::FromHost(n.values.data(), n.shape, DType::kF64, cpu);
    list.emplace_back(n.name, f32 ? t.ConvertTo(DType::kF32) : t);
  }
  const absl::Status s = WriteSafetensors(path, list);
  ASSERT_TRUE(s.ok()) << s;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

}  // namespace pmol::grads_test
