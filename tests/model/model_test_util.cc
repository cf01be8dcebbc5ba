// Model test helpers; see model_test_util.h.
#include "tests/model/model_test_util.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "gtest/gtest.h"
#include "pmol/core/rng.h"
#include "pmol/io/hf_config.h"
#include "pmol/io/safetensors.h"
#include "pmol/model/llama_weights.h"

namespace pmol {

std::string TempDir() {
  const char* t = std::getenv("TEST_TMPDIR");
  return t ? t : "/tmp";
}

void WriteRandomModel(const std::string& config_json, const std::string& dir, uint64_t seed,
                      double stddev) {
  ::mkdir(dir.c_str(), 0755);
  absl::StatusOr<LlamaConfig> config = ParseHfConfig(config_json, dir);
  ASSERT_TRUE(config.ok()) << config.status();
  Backend* cpu = GetBackend(DeviceType::kCpu).value();
  LlamaWeights w = InitLlamaWeights(*config, seed, stddev, cpu, DType::kF32);
  Rng rng(seed + 1);
  ForEachWeight(*config, w, [&](const WeightSlot& slot) {
    if (slot.kind != WeightKind::kNorm && slot.kind != WeightKind::kBias) return;
    float* p = slot.tensor->data_as<float>();
    for (int64_t i = 0; i < slot.tensor->numel(); ++i) {
      p[i] = slot.kind == WeightKind::kNorm ? 1.0 + 0.1 * rng.Normal() : 0.05 * rng.Normal();
    }
  });
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", NamedWeights(*config, w)).ok());
  std::ofstream(dir + "/config.json") << config_json;
}

void ExpectClose(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1.0, worst = 0.0;
  size_t at = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    if (!(err <= worst)) {  // also catches NaN
      worst = err;
      at = i;
    }
  }
  EXPECT_LE(worst, tol * scale) << what << ": worst at " << at << " got " << got[at] << " want "
                                << want[at] << " (scale " << scale << ")";
}

void RunPythonOracle(const std::string& script, const std::string& arg) {
  const std::string cmd = "/usr/bin/python3 " + script + " " + arg;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "oracle failed: " << cmd;
}

}  // namespace pmol
